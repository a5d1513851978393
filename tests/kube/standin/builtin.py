"""Objects every real cluster has; seeded when the fixtures do not define them."""

ALL_NS = ["configmaps", "secrets", "pods", "services", "serviceaccounts"]


def _cr(name, rules):
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules}


READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def builtin_objects():
    objs = []
    for ns in ("default", "kube-public", "kube-node-lease", "kube-system"):
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    objs.append(_cr("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                      {"nonResourceURLs": ["*"], "verbs": ["*"]}]))
    view = [
        {"apiGroups": [""], "resources": ["configmaps", "pods", "pods/log", "pods/status", "services", "services/status",
                                          "serviceaccounts", "namespaces", "namespaces/status", "events"],
         "verbs": READ},
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "deployments/status", "replicasets",
                                              "replicasets/scale", "replicasets/status"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
    ]
    edit = view + [
        {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "services", "serviceaccounts"],
         "verbs": WRITE},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "deployments/rollback",
                                              "replicasets", "replicasets/scale"], "verbs": WRITE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": WRITE},
    ]
    admin = edit + [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": READ + WRITE},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
    ]
    objs.append(_cr("view", view))
    objs.append(_cr("edit", edit))
    objs.append(_cr("admin", admin))
    basic = _cr("system:basic-user", [{"apiGroups": ["authorization.k8s.io"],
                                       "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                                       "verbs": ["create"]},
                                      {"apiGroups": ["authentication.k8s.io"],
                                       "resources": ["selfsubjectreviews"], "verbs": ["create"]}])
    disc = _cr("system:discovery", [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                                                         "/livez", "/readyz", "/openapi", "/openapi/*", "/version",
                                                         "/version/"], "verbs": ["get"]}])
    objs += [basic, disc]
    for name in ("system:basic-user", "system:discovery"):
        objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                   "name": "system:authenticated"}]})
    objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]})
    return objs
