output "function_name" {
  description = "Full name of the cleaner function (null when delivery is drain)."
  value       = one(google_cloudfunctions2_function.cleaner[*].id)
}

output "function_uri" {
  description = "URL of the function's Cloud Run service, where the push subscription delivers (null when delivery is drain)."
  value       = one(google_cloudfunctions2_function.cleaner[*].service_config[0].uri)
}

output "topic" {
  description = "The registry's gcr topic the cleaner listens to."
  value       = local.topic_id
}

output "push_subscription" {
  description = "The push subscription on gcr (null when delivery is drain)."
  value       = one(google_pubsub_subscription.push[*].id)
}

output "dead_letter_topic" {
  description = "Topic that receives notifications which failed max_delivery_attempts times."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Pull subscription that keeps the dead letters for 7 days, to read or replay them."
  value       = google_pubsub_subscription.dead_letter.id
}

output "runtime_service_account" {
  description = "Email of the account the cleaner runs as (grant it more repositories here)."
  value       = google_service_account.runtime.email
}

output "invoker_service_account" {
  description = "Email of the account whose OIDC token authenticates the push requests (null when delivery is drain)."
  value       = one(google_service_account.invoker[*].email)
}

output "drain_job" {
  description = "Full name of the drain Cloud Run job (null unless delivery is drain or both)."
  value       = one(google_cloud_run_v2_job.drain[*].id)
}

output "drain_subscription" {
  description = "Pull subscription the drain job empties (null unless delivery is drain or both)."
  value       = one(google_pubsub_subscription.drain[*].id)
}

output "scheduler_service_account" {
  description = "Email of the account Cloud Scheduler runs the drain job as (null unless delivery is drain or both)."
  value       = one(google_service_account.scheduler[*].email)
}

output "cleaner_config" {
  description = "The policy as the cleaner receives it in CLEANER_CONFIG."
  value       = local.cleaner_config
}
