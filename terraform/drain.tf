# The drain alternative: a pull subscription on `gcr` that a scheduled Cloud Run job empties in
# batches with `python -m cleaner drain`. Off unless delivery is drain or both.

resource "google_pubsub_subscription" "drain" {
  count   = local.drain_enabled ? 1 : 0
  project = var.project
  name    = "${var.name}-drain"
  topic   = local.topic_id
  labels  = local.labels

  # A batch may take minutes; an unacknowledged message returns once this passes.
  ack_deadline_seconds       = 600
  message_retention_duration = "86400s"

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

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

resource "google_pubsub_subscription_iam_member" "drain_dead_letter_subscriber" {
  count        = local.drain_enabled ? 1 : 0
  project      = var.project
  subscription = google_pubsub_subscription.drain[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# The runtime account consumes this one subscription and no other.
resource "google_pubsub_subscription_iam_member" "drain_runtime_subscriber" {
  count        = local.drain_enabled ? 1 : 0
  project      = var.project
  subscription = google_pubsub_subscription.drain[0].name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runtime.member
}

resource "google_cloud_run_v2_job" "drain" {
  count    = local.drain_enabled ? 1 : 0
  project  = var.project
  location = var.region
  name     = "${var.name}-drain"
  labels   = local.labels
  # The job keeps no data; Terraform may replace or remove it like any other part.
  deletion_protection = false

  template {
    labels      = local.labels
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.runtime.email
      timeout         = "${var.drain_timeout_s}s"
      # Unacknowledged messages come back by themselves; the next scheduled run picks them up.
      max_retries = 0

      containers {
        image   = var.drain_image
        command = ["python", "-m", "cleaner"]
        args    = ["drain", "--subscription", google_pubsub_subscription.drain[0].id]

        dynamic "env" {
          for_each = local.drain_env
          content {
            name  = env.key
            value = env.value
          }
        }

        # Cloud Run requires at least 512 MiB beside one CPU.
        resources {
          limits = {
            cpu    = "1"
            memory = "${max(512, var.memory_mb)}Mi"
          }
        }
      }
    }
  }

  depends_on = [google_pubsub_subscription_iam_member.drain_runtime_subscriber]
}

resource "google_service_account" "scheduler" {
  count        = local.drain_enabled ? 1 : 0
  project      = var.project
  account_id   = "${var.name}-sched"
  display_name = "cleaner ${var.name}: drain schedule"
  description  = "Identity of the Cloud Scheduler job; may run the cleaner drain job and nothing else."
}

# run.invoker on a job allows run.jobs.run on that job alone.
resource "google_cloud_run_v2_job_iam_member" "scheduler" {
  count    = local.drain_enabled ? 1 : 0
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_job.drain[0].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler[0].member
}

resource "google_cloud_scheduler_job" "drain" {
  count       = local.drain_enabled ? 1 : 0
  project     = var.project
  region      = var.region
  name        = "${var.name}-drain"
  description = "Runs the cleaner drain job, which empties the ${var.name}-drain subscription."
  schedule    = var.drain_schedule
  time_zone   = var.drain_time_zone

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.drain[0].id}:run"
    oauth_token {
      service_account_email = google_service_account.scheduler[0].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler]
}
