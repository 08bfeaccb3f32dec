# Topics and subscriptions: the registry's `gcr` topic, the push subscription that feeds the
# function, and the dead-letter topic that catches what keeps failing.

# Enabling the registry API may already have created the topic, so it is only read by default.
resource "google_pubsub_topic" "gcr" {
  # checkov:skip=CKV_GCP_83:The registry publishes image references only (host/path, digest, tag), no secrets; Google-managed encryption applies, and a customer key would have to be granted to Google's registry and Pub/Sub agents.
  count   = var.create_topic ? 1 : 0
  project = local.registry_project
  name    = "gcr"
  labels  = local.labels
}

data "google_pubsub_topic" "gcr" {
  count   = var.create_topic ? 0 : 1
  project = local.registry_project
  name    = "gcr"
}

locals {
  topic_id = var.create_topic ? google_pubsub_topic.gcr[0].id : data.google_pubsub_topic.gcr[0].id
  # Google's own identity for Pub/Sub in this project: it moves messages to the dead-letter
  # topic and signs the push requests.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83:Dead letters are copies of gcr notifications, image references without secrets; Google-managed encryption applies.
  project = var.project
  name    = "${var.name}-dead-letter"
  labels  = local.labels
}

# A topic keeps nothing by itself: this subscription holds the dead letters for a week so they
# can be read and replayed.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project
  name                       = "${var.name}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = local.labels
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "push" {
  count   = local.push_enabled ? 1 : 0
  project = var.project
  name    = "${var.name}-push"
  topic   = local.topic_id
  labels  = local.labels

  ack_deadline_seconds = local.ack_deadline_s
  # A later push prunes the same repository again, so an old notification is worth little.
  message_retention_duration = "86400s"

  # A registry can go quiet for longer than the default 31-day expiry.
  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "${var.min_backoff_s}s"
    maximum_backoff = "${var.max_backoff_s}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.cleaner[0].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.invoker[0].email
      audience              = google_cloudfunctions2_function.cleaner[0].service_config[0].uri
    }
  }

  # Deliveries before these grants exist would fail and count towards dead-lettering.
  depends_on = [
    google_cloud_run_v2_service_iam_member.invoker,
    google_service_account_iam_member.pubsub_token_creator,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
