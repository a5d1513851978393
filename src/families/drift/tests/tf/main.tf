# Fixture for rbl's drift tests: only the built-in terraform_data resource, so
# `terraform init && terraform apply` works offline (no provider to download).
# Regenerate the fixtures from this directory with:
#   terraform init && terraform apply -auto-approve && terraform show -json > show.json
#   rm -rf .terraform terraform.tfstate.backup

variable "tenants" {
  type    = set(string)
  default = ["prod-tenant-7", "staging-tenant-2"]
}

# The intended database pool ConfigMap, shaped like a kubernetes_config_map.
resource "terraform_data" "db_pool" {
  input = {
    metadata = {
      name      = "db-pool-config"
      namespace = "prod-tenant-7"
    }
    data = {
      max_connections = 500
      idle_timeout    = "30s"
      min_idle        = 10
    }
    statement_cache = true
  }
}

# A counted resource: three read replicas.
resource "terraform_data" "replica" {
  count = 3
  input = {
    name     = "db-replica-${count.index}"
    priority = count.index * 10
  }
}

# One module instance per tenant (for_each), each with nested resources.
module "tenant" {
  source          = "./modules/tenant"
  for_each        = var.tenants
  tenant          = each.key
  max_connections = each.key == "prod-tenant-7" ? 500 : 100
}

output "db_pool" {
  value = terraform_data.db_pool.output
}
