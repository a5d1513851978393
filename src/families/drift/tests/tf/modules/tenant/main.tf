# Per-tenant settings: a keyed resource, a counted one and a nested module.

variable "tenant" { type = string }
variable "max_connections" { type = number }

resource "terraform_data" "db_pool" {
  input = {
    metadata = {
      name      = "db-pool-config"
      namespace = var.tenant
      labels    = { tenant = var.tenant, "app.kubernetes.io/name" = "db-pool" }
    }
    data = {
      max_connections = var.max_connections
      idle_timeout    = "30s"
      min_idle        = 10
    }
  }
}

resource "terraform_data" "worker" {
  for_each = toset(["api", "batch"])
  input = {
    tenant = var.tenant
    role   = each.key
  }
}

module "quota" {
  source = "./quota"
  tenant = var.tenant
}
