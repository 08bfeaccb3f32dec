# Prunes one project's gcr.io images and one Artifact Registry repository on every push.
# Start with dry_run = true, read what the function logs it would delete, then set it to false.

variable "project" {
  description = "Project whose registries are pruned; the cleaner is deployed there too."
  type        = string
}

variable "region" {
  description = "Region of the cleaner function."
  type        = string
  default     = "us-central1"
}

provider "google" {
  project = var.project
  region  = var.region
}

module "cleaner" {
  source = "../.."

  project = var.project
  region  = var.region

  # Where the cleaner may delete: the project's gcr.io repository and one Docker repository.
  gcr_hosts    = ["gcr.io"]
  repositories = [{ location = var.region, repository = "apps" }]

  # First match wins, so the specific rule comes before the catch-all.
  rules = [
    {
      repository = "${var.region}-docker.pkg.dev/${var.project}/apps/**"
      keep       = 10
      keep_tags  = ["latest", "re:^v[0-9]+\\.[0-9]+\\.[0-9]+$"]
      grace      = "2h"
    },
    {
      repository    = "gcr.io/${var.project}/**"
      keep_tagged   = 5
      keep_untagged = 0
      grace         = "1d"
    },
  ]

  dry_run = true
  labels  = { team = "platform" }
}

output "function_uri" {
  description = "Where the push subscription delivers."
  value       = module.cleaner.function_uri
}

output "dead_letter_subscription" {
  description = "Read notifications that kept failing here."
  value       = module.cleaner.dead_letter_subscription
}

output "runtime_service_account" {
  description = "The account that deletes images."
  value       = module.cleaner.runtime_service_account
}
