# The push function: its source zip, the bucket the zip is uploaded to, and the function itself.

data "google_project" "this" {
  project_id = var.project
}

data "archive_file" "function" {
  count       = local.push_enabled ? 1 : 0
  type        = "zip"
  output_path = "${path.root}/.terraform/cleaner/${var.name}-function.zip"

  # One entry per allowed file; the provider sorts the entries and stamps no times, so the zip's
  # hash changes only when a file does.
  dynamic "source" {
    for_each = local.function_source_files
    content {
      filename = source.value
      content  = file("${local.source_root}/${source.value}")
    }
  }

  lifecycle {
    precondition {
      condition     = contains(local.function_source_files, "main.py") && contains(local.function_source_files, "requirements.txt")
      error_message = "source_dir must hold main.py and requirements.txt (and the cleaner/ package)."
    }
  }
}

resource "random_id" "source_bucket" {
  count       = local.push_enabled && var.source_bucket == null ? 1 : 0
  byte_length = 4
}

resource "google_storage_bucket" "source" {
  # checkov:skip=CKV_GCP_62:The bucket holds only the function's source zip, private to the project (uniform access, public access prevention enforced); usage logs would need a second bucket and have no reader. Pass source_bucket to use a bucket with logging.
  count    = local.push_enabled && var.source_bucket == null ? 1 : 0
  project  = var.project
  name     = "${var.name}-src-${random_id.source_bucket[0].hex}"
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # The bucket holds nothing but build inputs that Terraform can upload again.
  force_destroy = true

  versioning {
    enabled = true
  }

  # Each upload has a new name, so old versions only pile up; a month is enough to roll back.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

locals {
  source_bucket = local.push_enabled ? coalesce(var.source_bucket, try(google_storage_bucket.source[0].name, null)) : null
}

resource "google_storage_bucket_object" "function_source" {
  count  = local.push_enabled ? 1 : 0
  bucket = local.source_bucket
  # The content hash in the name makes every code change a new object, which redeploys.
  name   = "${var.name}/function-${data.archive_file.function[0].output_md5}.zip"
  source = data.archive_file.function[0].output_path
}

resource "google_cloudfunctions2_function" "cleaner" {
  count       = local.push_enabled ? 1 : 0
  project     = var.project
  location    = var.region
  name        = var.name
  description = "Prunes container images when the gcr topic reports a push."
  labels      = local.labels

  build_config {
    runtime         = var.runtime
    entry_point     = "handle"
    service_account = var.build_service_account
    source {
      storage_source {
        bucket = local.source_bucket
        object = google_storage_bucket_object.function_source[0].name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.runtime.email
    # Pub/Sub push counts as internal traffic; nothing outside the project can reach the URL.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    min_instance_count             = 0
    max_instance_count             = var.max_instances
    available_memory               = "${var.memory_mb}Mi"
    timeout_seconds                = var.timeout_s
    environment_variables          = local.function_env
  }

  lifecycle {
    precondition {
      condition     = length(local.registry_repository_grants) > 0 || var.grant_repo_admin_on_whole_project
      error_message = "The cleaner may prune nothing: list repositories or gcr_hosts (or set grant_repo_admin_on_whole_project)."
    }
  }
}
