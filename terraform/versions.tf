terraform {
  # 1.9 is the first release whose validation blocks may read other variables
  # (drain_image needs delivery, max_backoff_s needs min_backoff_s).
  required_version = ">= 1.9, < 2.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.0 gave the Cloud Run v2 resources their deletion_protection argument;
      # the module is checked against the 8.x schema.
      version = ">= 6.0, < 9.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5, < 4.0"
    }
  }
}
