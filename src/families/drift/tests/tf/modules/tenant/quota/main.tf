# A nested module, to exercise module.a["k"].module.b addresses.

variable "tenant" { type = string }

resource "terraform_data" "limits" {
  count = 1
  input = {
    tenant = var.tenant
    cpu    = "4"
    memory = "8Gi"
  }
}
