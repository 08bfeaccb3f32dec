# Identities and grants. Each account gets what its one job needs, on the one resource it
# touches; nothing is granted project-wide unless an input asks for it by name.

resource "google_service_account" "runtime" {
  project      = var.project
  account_id   = "${var.name}-run"
  display_name = "cleaner ${var.name}: prunes registries"
  description  = "Runs the cleaner function and drain job; may delete images in the listed repositories."
}

resource "google_service_account" "invoker" {
  count        = local.push_enabled ? 1 : 0
  project      = var.project
  account_id   = "${var.name}-push"
  display_name = "cleaner ${var.name}: push invoker"
  description  = "Identity of the gcr push subscription; may invoke the cleaner function and nothing else."
}

# --- Registry ----------------------------------------------------------------------------------

# Listing needs downloadArtifacts and deleting needs deleteArtifacts: repoAdmin is the smallest
# predefined role with both (writer cannot delete).
resource "google_artifact_registry_repository_iam_member" "runtime" {
  for_each   = local.registry_repository_grants
  project    = each.value.project
  location   = each.value.location
  repository = each.value.repository
  role       = "roles/artifactregistry.repoAdmin"
  member     = google_service_account.runtime.member
}

resource "google_project_iam_member" "runtime_repo_admin_project_wide" {
  count   = var.grant_repo_admin_on_whole_project ? 1 : 0
  project = local.registry_project
  role    = "roles/artifactregistry.repoAdmin"
  member  = google_service_account.runtime.member
}

# In-use protection lists Cloud Run services and jobs; run.viewer has no narrower scope for that.
resource "google_project_iam_member" "runtime_run_viewer" {
  for_each = toset(local.in_use_projects)
  project  = each.value
  role     = "roles/run.viewer"
  member   = google_service_account.runtime.member
}

# --- Push delivery -----------------------------------------------------------------------------

# A 2nd gen function is served by a Cloud Run service of the same name: invoking it takes
# run.invoker on that service, not cloudfunctions.invoker.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  count    = local.push_enabled ? 1 : 0
  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.cleaner[0].service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.invoker[0].member
}

resource "google_service_account_iam_member" "pubsub_token_creator" {
  count              = local.push_enabled && var.grant_pubsub_token_creator ? 1 : 0
  service_account_id = google_service_account.invoker[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# --- Dead-lettering: exactly what the dead-letter policy needs ---------------------------------

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "push_dead_letter_subscriber" {
  count        = local.push_enabled ? 1 : 0
  project      = var.project
  subscription = google_pubsub_subscription.push[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
