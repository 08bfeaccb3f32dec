# Prunes in scheduled batches instead of on every push: a Cloud Run job drains a pull
# subscription on `gcr` every 15 minutes. A job runs a container image, so build one that holds
# the cleaner package (pip install of this repository) and give it as drain_image.

variable "project" {
  description = "Project whose registries are pruned; the cleaner is deployed there too."
  type        = string
}

variable "region" {
  description = "Region of the drain job and its schedule."
  type        = string
  default     = "europe-west1"
}

variable "drain_image" {
  description = "Container image with Python and the cleaner package."
  type        = string
}

provider "google" {
  project = var.project
  region  = var.region
}

module "cleaner" {
  source = "../.."

  project  = var.project
  region   = var.region
  delivery = "drain"

  drain_image    = var.drain_image
  drain_schedule = "*/15 * * * *"

  gcr_hosts = ["eu.gcr.io"]
  rules = [
    {
      repository = "eu.gcr.io/${var.project}/**"
      keep       = 20
      keep_tags  = ["release-*"]
      max_age    = "90d"
    },
  ]

  # Keep what runs on Cloud Run in this region, whatever its age.
  in_use = { regions = [var.region] }
}

output "drain_job" {
  description = "The Cloud Run job that empties the subscription."
  value       = module.cleaner.drain_job
}

output "drain_subscription" {
  description = "The pull subscription on gcr."
  value       = module.cleaner.drain_subscription
}
