# Inputs of the cleaner module. Every rule the product enforces on its policy at start is also
# checked here, so a bad policy fails `terraform plan` instead of every later push.

# ---------------------------------------------------------------------------------------------
# Where
# ---------------------------------------------------------------------------------------------

variable "project" {
  description = "Project that holds the function, its subscriptions and service accounts."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a Google project ID such as my-project (6-30 lower-case letters, digits or hyphens)."
  }
}

variable "region" {
  description = "Region of the function, the drain job, its schedule and the source bucket, e.g. us-central1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+(-[a-z]+)*[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "registry_project" {
  description = "Project whose registries are pruned: its `gcr` topic feeds the cleaner and its gcr.io repositories are the ones gcr_hosts names. null: the same as project."
  type        = string
  default     = null

  validation {
    condition     = var.registry_project == null || can(regex("^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.registry_project))
    error_message = "registry_project must be null or a Google project ID such as my-project."
  }
}

variable "name" {
  description = "Prefix of every resource name (function, topics, subscriptions, service accounts)."
  type        = string
  default     = "cleaner"

  validation {
    # Service account IDs are 6-30 characters and get a suffix of up to 6 ("-sched").
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name must be 3-20 lower-case letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels (app and cleaner-instance are always set)."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.labels :
      can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "labels keys must start with a lower-case letter; keys and values may hold only lower-case letters, digits, _ and -, at most 63 characters."
  }
}

# ---------------------------------------------------------------------------------------------
# The policy (CLEANER_CONFIG)
# ---------------------------------------------------------------------------------------------

variable "rules" {
  description = "The retention rules, first match wins. Keys as in the product's policy: repository (HOST/PATH glob), keep or keep_tagged with keep_untagged, keep_tags, grace, max_age, untagged_only, allow_empty, max_deletions, dry_run."
  type = list(object({
    repository    = string
    keep          = optional(number)
    keep_tagged   = optional(number)
    keep_untagged = optional(number)
    keep_tags     = optional(list(string))
    grace         = optional(string)
    max_age       = optional(string)
    untagged_only = optional(bool)
    allow_empty   = optional(bool)
    max_deletions = optional(number)
    dry_run       = optional(bool)
  }))

  validation {
    condition     = length(var.rules) > 0
    error_message = "rules must hold at least one rule."
  }

  validation {
    condition = alltrue([
      for r in var.rules : try(
        trimspace(r.repository) == "**" || (
          can(regex("^[a-z0-9._*?:-]+(/[a-z0-9._*?:-]+)+$", trimspace(r.repository))) &&
          can(regex("[.*]|^localhost", split("/", trimspace(r.repository))[0]))
        ),
        false
      )
    ])
    error_message = "Each rule's repository must be a lower-case HOST/PATH glob such as gcr.io/my-project/** or us-docker.pkg.dev/my-project/my-repo/app: a registry host, then path segments separated by single '/', with * or ? inside a segment and ** for any number of segments (** alone matches every repository)."
  }

  validation {
    condition = alltrue([
      for r in var.rules : try(
        (r.keep != null) != (r.keep_tagged != null || r.keep_untagged != null) &&
        (r.keep_tagged == null) == (r.keep_untagged == null),
        false
      )
    ])
    error_message = "Each rule says how many images to keep: either keep, or keep_tagged together with keep_untagged (never keep and the pair at once)."
  }

  validation {
    condition = alltrue(flatten([
      for r in var.rules : [
        for n in [r.keep, r.keep_tagged, r.keep_untagged] : n == null ? true : n >= 0 && floor(n) == n
      ]
    ]))
    error_message = "keep, keep_tagged and keep_untagged must be whole numbers >= 0."
  }

  validation {
    condition = alltrue([
      for r in var.rules : r.max_deletions == null ? true : r.max_deletions >= 1 && floor(r.max_deletions) == r.max_deletions
    ])
    error_message = "max_deletions must be a whole number >= 1 (or left out for no cap)."
  }

  validation {
    condition = alltrue(flatten([
      for r in var.rules : [
        for d in [r.grace, r.max_age] : d == null ? true : can(regex("^(0|([0-9]+[smhdw])+)$", trimspace(d)))
      ]
    ]))
    error_message = "grace and max_age must be durations: one or more <whole number><unit> with unit s, m, h, d or w (e.g. 90s, 1h30m, 7d), or 0."
  }

  validation {
    condition = alltrue([
      for r in var.rules : r.max_age == null ? true : !can(regex("^(0|(0+[smhdw])+)$", trimspace(r.max_age)))
    ])
    error_message = "max_age of 0 would delete every image that is not protected; leave max_age out for no age limit, or give a duration such as 30d."
  }

  validation {
    condition = alltrue(flatten([
      for r in var.rules : [
        for p in coalesce(r.keep_tags, []) : try(trimspace(p) != "" && p != "re:", false)
      ]
    ]))
    error_message = "keep_tags patterns must be non-empty: a full-match glob such as release-*, or a regular expression written re:<expression>."
  }
}

variable "in_use" {
  description = "Protect images that Cloud Run services and jobs use: regions to read, projects (null: each pruned repository's own project) and how many recent revisions count. null (the default) turns it off; on, the runtime account gets roles/run.viewer in those projects."
  type = object({
    regions   = list(string)
    projects  = optional(list(string))
    revisions = optional(number, 3)
  })
  default = null

  validation {
    condition = var.in_use == null ? true : length(var.in_use.regions) > 0 && alltrue([
      for r in var.in_use.regions : can(regex("^([a-z]+(-[a-z]+)*[0-9]+|-)$", r))
    ])
    error_message = "in_use.regions must list Cloud Run regions such as us-central1 (or \"-\" for all regions)."
  }

  validation {
    condition = var.in_use == null ? true : alltrue([
      for p in coalesce(var.in_use.projects, []) : can(regex("^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$", p))
    ])
    error_message = "in_use.projects must be Google project IDs such as my-project."
  }

  validation {
    condition     = var.in_use == null ? true : var.in_use.revisions >= 0 && floor(var.in_use.revisions) == var.in_use.revisions
    error_message = "in_use.revisions must be a whole number >= 0."
  }
}

# ---------------------------------------------------------------------------------------------
# Registry permissions
# ---------------------------------------------------------------------------------------------

variable "repositories" {
  description = "Artifact Registry repositories the runtime account may prune (roles/artifactregistry.repoAdmin on each, nothing wider). project null: registry_project."
  type = list(object({
    location   = string
    repository = string
    project    = optional(string)
  }))
  default = []

  validation {
    condition = alltrue([
      for r in var.repositories :
      can(regex("^[a-z]+(-[a-z]+)*[0-9]*$", r.location)) && can(regex("^[a-z0-9][a-z0-9._-]*$", r.repository))
    ])
    error_message = "Each repository is {location, repository}: a location such as us-central1, us or europe, and the repository ID alone (e.g. my-repo or eu.gcr.io), not a host or a path."
  }
}

variable "gcr_hosts" {
  description = "gcr.io hosts of registry_project to prune; each maps to its Artifact Registry gcr.io repository (gcr.io and us.gcr.io: location us, eu.gcr.io: europe, asia.gcr.io: asia), which the runtime account gets repoAdmin on."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.gcr_hosts : contains(["gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"], h)])
    error_message = "gcr_hosts may hold gcr.io, us.gcr.io, eu.gcr.io and asia.gcr.io."
  }
}

variable "grant_repo_admin_on_whole_project" {
  description = "Opt-in: grant roles/artifactregistry.repoAdmin on all of registry_project instead of per repository. Off by default; prefer repositories and gcr_hosts."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------

variable "create_topic" {
  description = "Create the `gcr` topic in registry_project. Leave false when it exists already (enabling the registry API may have created it); Terraform then only reads it."
  type        = bool
  default     = false
}

variable "delivery" {
  description = "How notifications reach the cleaner: push (a subscription pushes each one to the function), drain (a scheduled Cloud Run job pulls them in batches) or both."
  type        = string
  default     = "push"

  validation {
    condition     = contains(["push", "drain", "both"], var.delivery)
    error_message = "delivery must be push, drain or both."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of one notification before it moves to the dead-letter topic."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100 && floor(var.max_delivery_attempts) == var.max_delivery_attempts
    error_message = "max_delivery_attempts must be a whole number from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "min_backoff_s" {
  description = "Shortest wait before a failed notification is delivered again (retries back off exponentially)."
  type        = number
  default     = 10

  validation {
    condition     = var.min_backoff_s >= 0 && var.min_backoff_s <= 600 && floor(var.min_backoff_s) == var.min_backoff_s
    error_message = "min_backoff_s must be a whole number of seconds from 0 to 600."
  }
}

variable "max_backoff_s" {
  description = "Longest wait between deliveries of a failing notification."
  type        = number
  default     = 600

  validation {
    condition     = var.max_backoff_s >= var.min_backoff_s && var.max_backoff_s <= 600 && floor(var.max_backoff_s) == var.max_backoff_s
    error_message = "max_backoff_s must be a whole number of seconds from min_backoff_s to 600."
  }
}

variable "grant_pubsub_token_creator" {
  description = "Let the Pub/Sub service agent mint OIDC tokens for the invoker account only (roles/iam.serviceAccountTokenCreator on that one account). Projects created before April 2021 need it for authenticated push; newer ones do not, and it grants nothing beyond the invoker account."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------
# The function (delivery push or both)
# ---------------------------------------------------------------------------------------------

variable "runtime" {
  description = "Cloud Run functions Python runtime."
  type        = string
  default     = "python313"

  validation {
    condition     = can(regex("^python3(1[2-9]|[2-9][0-9])$", var.runtime))
    error_message = "runtime must be python312 or newer (python313, python314, ...)."
  }
}

variable "timeout_s" {
  description = "Function timeout. The cleaner stops starting deletions 60 s before it (CLEANER_DEADLINE_S) and the push subscription's ack deadline is 60 s longer."
  type        = number
  default     = 540

  validation {
    # Event-driven functions run at most 540 s and a push ack deadline is at most 600 s.
    condition     = var.timeout_s >= 120 && var.timeout_s <= 540 && floor(var.timeout_s) == var.timeout_s
    error_message = "timeout_s must be a whole number of seconds from 120 to 540."
  }
}

variable "memory_mb" {
  description = "Memory of one function instance, in MiB."
  type        = number
  default     = 512

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.memory_mb)
    error_message = "memory_mb must be 256, 512, 1024, 2048 or 4096."
  }
}

variable "max_instances" {
  description = "Most function instances at once: bounds cost and the registry request rate when many images are pushed together."
  type        = number
  default     = 5

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 100 && floor(var.max_instances) == var.max_instances
    error_message = "max_instances must be a whole number from 1 to 100."
  }
}

variable "source_dir" {
  description = "Directory holding main.py, requirements.txt and cleaner/. null: the repository root above this module."
  type        = string
  default     = null
}

variable "source_bucket" {
  description = "Existing bucket for the function's source zip. null: the module creates a private bucket."
  type        = string
  default     = null
}

variable "build_service_account" {
  description = "Service account Cloud Build uses to build the function, as projects/PROJECT/serviceAccounts/EMAIL. null: the project's default build account."
  type        = string
  default     = null

  validation {
    condition     = var.build_service_account == null || can(regex("^projects/[^/]+/serviceAccounts/[^/]+@[^/]+$", var.build_service_account))
    error_message = "build_service_account must be null or projects/PROJECT/serviceAccounts/EMAIL."
  }
}

# ---------------------------------------------------------------------------------------------
# Product settings (environment variables)
# ---------------------------------------------------------------------------------------------

variable "dry_run" {
  description = "CLEANER_DRY_RUN: plan and log every decision, delete nothing."
  type        = bool
  default     = false
}

variable "log_level" {
  description = "CLEANER_LOG_LEVEL: DEBUG logs every decision with its reason."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "concurrency" {
  description = "CLEANER_CONCURRENCY: registry requests in flight at once, per instance."
  type        = number
  default     = 16

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 64 && floor(var.concurrency) == var.concurrency
    error_message = "concurrency must be a whole number from 1 to 64."
  }
}

variable "http_timeout_s" {
  description = "CLEANER_HTTP_TIMEOUT_S: seconds to wait for one registry answer."
  type        = number
  default     = 30

  validation {
    condition     = var.http_timeout_s >= 1 && var.http_timeout_s <= 600 && floor(var.http_timeout_s) == var.http_timeout_s
    error_message = "http_timeout_s must be a whole number of seconds from 1 to 600."
  }
}

# ---------------------------------------------------------------------------------------------
# The drain job (delivery drain or both)
# ---------------------------------------------------------------------------------------------

variable "drain_image" {
  description = "Container image holding the cleaner package and Python, for the drain job (a Cloud Run job runs an image, not a zip). Required when delivery is drain or both."
  type        = string
  default     = null

  validation {
    condition     = var.delivery == "push" || try(trimspace(var.drain_image) != "", false)
    error_message = "drain_image must name a container image (e.g. us-docker.pkg.dev/my-project/tools/cleaner:1.0) when delivery is drain or both."
  }
}

variable "drain_schedule" {
  description = "When the drain job runs, in cron syntax (Cloud Scheduler)."
  type        = string
  default     = "*/15 * * * *"

  validation {
    condition     = can(regex("^\\S+(\\s+\\S+){4}$", trimspace(var.drain_schedule)))
    error_message = "drain_schedule must be a cron expression of five fields, e.g. */15 * * * *."
  }
}

variable "drain_time_zone" {
  description = "Time zone of drain_schedule (an IANA name)."
  type        = string
  default     = "Etc/UTC"
}

variable "drain_timeout_s" {
  description = "Longest run of one drain; the cleaner stops starting deletions 60 s before it."
  type        = number
  default     = 1800

  validation {
    condition     = var.drain_timeout_s >= 120 && var.drain_timeout_s <= 3600 && floor(var.drain_timeout_s) == var.drain_timeout_s
    error_message = "drain_timeout_s must be a whole number of seconds from 120 to 3600."
  }
}
