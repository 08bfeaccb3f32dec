# Values computed from the inputs alone. This file reads no resource and no data source, so the
# tests evaluate it, with variables.tf, in a Terraform run that needs no provider.

locals {
  registry_project = coalesce(var.registry_project, var.project)
  push_enabled     = contains(["push", "both"], var.delivery)
  drain_enabled    = contains(["drain", "both"], var.delivery)

  labels = merge({ app = "cleaner", cleaner-instance = var.name }, var.labels)

  # Since Container Registry's shutdown every gcr.io host is served by an Artifact Registry
  # repository named after the host, in the multi-region the host stood for.
  gcr_repository_locations = {
    "gcr.io"      = "us"
    "us.gcr.io"   = "us"
    "eu.gcr.io"   = "europe"
    "asia.gcr.io" = "asia"
  }

  registry_repositories = concat(
    [for r in var.repositories : {
      project    = coalesce(r.project, local.registry_project)
      location   = r.location
      repository = r.repository
    }],
    [for h in var.gcr_hosts : {
      project    = local.registry_project
      location   = local.gcr_repository_locations[h]
      repository = h
    }],
  )
  # Keyed for for_each; a repository named twice (say in repositories and gcr_hosts) is granted once.
  registry_repository_grants = {
    for key, same in {
      for r in local.registry_repositories : "${r.project}/${r.location}/${r.repository}" => r...
    } : key => same[0]
  }
}

# In-use protection: the runtime account must read Cloud Run where the images may be deployed.
locals {
  in_use_enabled = var.in_use != null
  # The product reads each pruned repository's own project when in_use.projects is not given.
  in_use_projects = var.in_use == null ? [] : (
    var.in_use.projects != null ? distinct(var.in_use.projects) :
    distinct(concat([local.registry_project], [for r in local.registry_repositories : r.project]))
  )
}

# What the cleaner reads from its environment.
locals {
  # null attributes are fine: the product treats a JSON null like an absent key. in_use is left
  # out altogether when off, rather than sent as null, to keep the policy text minimal.
  cleaner_config = var.in_use == null ? jsonencode({ rules = var.rules }) : jsonencode({
    rules  = var.rules
    in_use = var.in_use
  })

  # Stop starting deletions this long before the platform ends the request or task, so the last
  # ones finish and are logged.
  deadline_margin_s = 60

  common_env = {
    CLEANER_CONFIG         = local.cleaner_config
    CLEANER_CONCURRENCY    = tostring(var.concurrency)
    CLEANER_HTTP_TIMEOUT_S = tostring(var.http_timeout_s)
    CLEANER_LOG_LEVEL      = var.log_level
    CLEANER_DRY_RUN        = tostring(var.dry_run)
  }
  function_env = merge(local.common_env, {
    CLEANER_DEADLINE_S = tostring(var.timeout_s - local.deadline_margin_s)
  })
  drain_env = merge(local.common_env, {
    CLEANER_DEADLINE_S = tostring(var.drain_timeout_s - local.deadline_margin_s)
  })

  # Pub/Sub waits this long for the function's answer before it redelivers; it must outlast the
  # function's timeout (and may not exceed 600 s).
  ack_deadline_s = min(600, var.timeout_s + local.deadline_margin_s)
}

# The function's source: an allowlist, so nothing else in the repository (tests, local fakes,
# Terraform, dotfiles, caches) can reach the zip. The test suite builds the zip from this list.
locals {
  source_root              = coalesce(var.source_dir, "${path.module}/..")
  function_source_patterns = ["main.py", "requirements.txt", "cleaner/**/*.py"]
  function_source_files = sort(distinct(flatten([
    for pattern in local.function_source_patterns : tolist(fileset(local.source_root, pattern))
  ])))
}
