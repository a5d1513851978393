"""Resource registry, defaulting, validation and table columns."""
import base64
import re
import time

RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class Res:
    def __init__(self, group, version, plural, kind, singular, namespaced, short=(),
                 verbs=RW, subresources=(), categories=(), field_selectors=(), create_only=False):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.singular, self.namespaced, self.short = singular, namespaced, list(short)
        self.verbs = list(verbs)
        self.subresources = list(subresources)  # (name, group, version, kind, verbs)
        self.categories = list(categories)
        self.field_selectors = ["metadata.name", "metadata.namespace"] + list(field_selectors)
        self.create_only = create_only

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def group_resource(self):
        """plural.group as used in error messages (e.g. deployments.apps)."""
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural

    def has_sub(self, name):
        return any(s[0] == name for s in self.subresources)


STATUS_SUB = ("status", None, None, None, ["get", "patch", "update"])

RESOURCES = [
    Res("", "v1", "namespaces", "Namespace", "namespace", False, ["ns"],
        verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
        subresources=[("status", "", "v1", "Namespace", ["get", "patch", "update"]),
                      ("finalize", "", "v1", "Namespace", ["update"])],
        field_selectors=["status.phase"]),
    Res("", "v1", "configmaps", "ConfigMap", "configmap", True, ["cm"]),
    Res("", "v1", "secrets", "Secret", "secret", True, field_selectors=["type"]),
    Res("", "v1", "pods", "Pod", "pod", True, ["po"], categories=["all"],
        subresources=[("log", "", "v1", "Pod", ["get"]),
                      ("status", "", "v1", "Pod", ["get", "patch", "update"])],
        field_selectors=["status.phase", "spec.nodeName", "spec.restartPolicy",
                         "spec.schedulerName", "spec.serviceAccountName", "status.podIP"]),
    Res("", "v1", "services", "Service", "service", True, ["svc"], categories=["all"],
        verbs=["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        subresources=[("status", "", "v1", "Service", ["get", "patch", "update"])]),
    Res("", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount", True, ["sa"]),
    Res("", "v1", "events", "Event", "event", True, ["ev"],
        field_selectors=["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                         "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                         "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"]),
    Res("apps", "v1", "deployments", "Deployment", "deployment", True, ["deploy"], categories=["all"],
        subresources=[("scale", "autoscaling", "v1", "Scale", ["get", "patch", "update"]),
                      ("status", "apps", "v1", "Deployment", ["get", "patch", "update"])]),
    Res("apps", "v1", "statefulsets", "StatefulSet", "statefulset", True, ["sts"], categories=["all"],
        subresources=[("scale", "autoscaling", "v1", "Scale", ["get", "patch", "update"]),
                      ("status", "apps", "v1", "StatefulSet", ["get", "patch", "update"])]),
    Res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", "persistentvolumeclaim", True, ["pvc"],
        subresources=[("status", "", "v1", "PersistentVolumeClaim", ["get", "patch", "update"])]),
    Res("coordination.k8s.io", "v1", "leases", "Lease", "lease", True),
    Res("apps", "v1", "replicasets", "ReplicaSet", "replicaset", True, ["rs"], categories=["all"],
        subresources=[("scale", "autoscaling", "v1", "Scale", ["get", "patch", "update"]),
                      ("status", "apps", "v1", "ReplicaSet", ["get", "patch", "update"])],
        field_selectors=["status.replicas"]),
    Res("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", "networkpolicy", True, ["netpol"]),
    Res("rbac.authorization.k8s.io", "v1", "roles", "Role", "role", True),
    Res("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", "rolebinding", True),
    Res("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", "clusterrole", False),
    Res("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", "clusterrolebinding", False),
    Res("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
        "selfsubjectaccessreview", False, verbs=["create"], create_only=True),
    Res("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview",
        "selfsubjectreview", False, verbs=["create"], create_only=True),
    Res("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview",
        "selfsubjectrulesreview", False, verbs=["create"], create_only=True),
    Res("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview",
        "subjectaccessreview", False, verbs=["create"], create_only=True),
    Res("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview",
        "localsubjectaccessreview", True, verbs=["create"], create_only=True),
]


def group_versions():
    """Ordered list of (group, version) served, core first."""
    seen = []
    for r in RESOURCES:
        gv = (r.group, r.version)
        if gv not in seen:
            seen.append(gv)
    return seen


def find(group, version, plural):
    for r in RESOURCES:
        if r.group == group and r.version == version and r.plural == plural:
            return r
    return None


def by_kind(api_version, kind):
    for r in RESOURCES:
        if r.api_version == api_version and r.kind == kind:
            return r
    return None


# ------------------------------------------------------------ validation
DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + r")*"
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"

MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                 "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                 "regex used for validation is '%s')" % DNS1123_SUBDOMAIN)
MSG_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
             "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
             "regex used for validation is '%s')" % DNS1123_LABEL)
MSG_1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
            "regex used for validation is '%s')" % DNS1035_LABEL)


def validate_name(res, name):
    """Return an error message or None."""
    if res.group == "rbac.authorization.k8s.io":
        if name in (".", ".."):
            return 'may not be \'%s\'' % name
        for bad in ("/", "%"):
            if bad in name:
                return "may not contain '%s'" % bad
        return None
    if res.plural == "namespaces":
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if re.fullmatch(DNS1123_LABEL, name) else MSG_LABEL
    if res.plural == "services":
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if re.fullmatch(DNS1035_LABEL, name) else MSG_1035
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if re.fullmatch(DNS1123_SUBDOMAIN, name) else MSG_SUBDOMAIN


_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


def validate_object(res, obj):
    """Kind-specific validation. Returns list of causes (field, message, value)."""
    causes = []
    md = obj.get("metadata") or {}
    for k, v in (md.get("labels") or {}).items():
        key_name = k.split("/")[-1]
        if not re.fullmatch(_QUALIFIED, key_name) or len(key_name) > 63 or k.count("/") > 1:
            causes.append(("metadata.labels", "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", k))
        if not isinstance(v, str) or len(v) > 63 or not re.fullmatch(_LABEL_VALUE, v):
            causes.append(("metadata.labels", "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", v))
    for k, v in (md.get("annotations") or {}).items():
        if not isinstance(v, str):
            causes.append(("metadata.annotations", "annotation values must be strings", v))
    if res.kind in ("Deployment", "StatefulSet"):
        spec = obj.get("spec") or {}
        reps = spec.get("replicas")
        if reps is not None and (not isinstance(reps, int) or isinstance(reps, bool) or reps < 0):
            causes.append(("spec.replicas", "must be greater than or equal to 0", reps))
        sel = (spec.get("selector") or {}).get("matchLabels")
        if not spec.get("selector"):
            causes.append(("spec.selector", "Required value", None))
        tmpl_labels = (((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
        if sel and any(tmpl_labels.get(k) != v for k, v in sel.items()):
            causes.append(("spec.template.metadata.labels", "`selector` does not match template `labels`", tmpl_labels))
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
        if not containers:
            causes.append(("spec.template.spec.containers", "Required value", None))
        else:
            names = set()
            for i, c in enumerate(containers):
                if not isinstance(c, dict) or not c.get("name"):
                    causes.append(("spec.template.spec.containers[%d].name" % i, "Required value", None))
                    continue
                if c["name"] in names:
                    causes.append(("spec.template.spec.containers[%d].name" % i, "Duplicate value", c["name"]))
                names.add(c["name"])
                if not c.get("image"):
                    causes.append(("spec.template.spec.containers[%d].image" % i, "Required value", None))
    if res.kind == "Pod":
        containers = (obj.get("spec") or {}).get("containers")
        if not containers:
            causes.append(("spec.containers", "Required value", None))
    if res.kind == "RoleBinding" or res.kind == "ClusterRoleBinding":
        ref = obj.get("roleRef") or {}
        if not ref.get("name") or ref.get("kind") not in ("Role", "ClusterRole"):
            causes.append(("roleRef", "Required value", None))
        if res.kind == "ClusterRoleBinding" and ref.get("kind") == "Role":
            causes.append(("roleRef.kind", "Unsupported value: \"Role\": supported values: \"ClusterRole\"", "Role"))
    return causes


class BadRequest(Exception):
    pass


def normalize(res, obj):
    """Type-level decoding checks that the real server does while decoding (400)."""
    if res.kind in ("ConfigMap", "Secret"):
        for field in ("data", "stringData", "binaryData") if res.kind == "ConfigMap" else ("data", "stringData"):
            d = obj.get(field)
            if d is None:
                continue
            if not isinstance(d, dict):
                raise BadRequest("%s.%s: expected map" % (res.kind, field))
            for k, v in d.items():
                if not isinstance(v, str):
                    raise BadRequest("json: cannot unmarshal %s into Go struct field %s.%s of type string"
                                     % (type(v).__name__, res.kind, field))
    if res.kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except Exception:
                raise BadRequest("illegal base64 data in Secret.data[%s]" % k)
        sd = obj.pop("stringData", None)
        if sd:
            data = obj.setdefault("data", {})
            for k, v in sd.items():
                data[k] = base64.b64encode(v.encode()).decode()


# ------------------------------------------------------------- defaulting

def _default_container(c):
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    img = c.get("image") or ""
    tag = img.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c:
        c["imagePullPolicy"] = "Always" if (":" not in tag or tag.endswith(":latest")) and "@" not in tag else "IfNotPresent"
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")


def default_pod_spec(spec):
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def apply_defaults(res, obj):
    md = obj.setdefault("metadata", {})
    if res.kind == "Namespace":
        md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md.get("name")
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif res.kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        st = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if st.get("type", "RollingUpdate") == "RollingUpdate":
            st.setdefault("type", "RollingUpdate")
            st.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", "25%")
            st["rollingUpdate"].setdefault("maxSurge", "25%")
        tmpl = spec.setdefault("template", {})
        tmpl.setdefault("metadata", {})
        if isinstance(tmpl["metadata"], dict) and tmpl["metadata"].get("creationTimestamp", 0) is None:
            del tmpl["metadata"]["creationTimestamp"]  # typed clients send null; the server drops it
        default_pod_spec(tmpl.setdefault("spec", {}))
    elif res.kind == "StatefulSet":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if us.get("type", "RollingUpdate") == "RollingUpdate":
            us.setdefault("type", "RollingUpdate")
            us.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        tmpl = spec.setdefault("template", {})
        tmpl.setdefault("metadata", {})
        default_pod_spec(tmpl.setdefault("spec", {}))
    elif res.kind == "Pod":
        default_pod_spec(obj.setdefault("spec", {}))
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif res.kind == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
    elif res.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif res.kind == "NetworkPolicy":
        spec = obj.setdefault("spec", {})
        spec.setdefault("podSelector", {})
        if "policyTypes" not in spec:
            types = ["Ingress"]
            if spec.get("egress"):
                types.append("Egress")
            spec["policyTypes"] = types


def simulate_controllers(res, obj):
    """Stand-in for controllers: a Deployment's status immediately reflects its spec."""
    if res.kind == "Deployment":
        spec = obj.get("spec") or {}
        n = spec.get("replicas", 1)
        st = obj.setdefault("status", {})
        st["observedGeneration"] = obj["metadata"].get("generation", 1)
        st["replicas"] = n
        st["updatedReplicas"] = n
        st["readyReplicas"] = n
        st["availableReplicas"] = n
        if n == 0:
            for k in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
                st.pop(k, None)
        st["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": 'ReplicaSet "%s" has successfully progressed.' % obj["metadata"]["name"]},
        ]


# ------------------------------------------------------------------ tables

def human_age(ts):
    try:
        t = time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except Exception:
        return "<unknown>"
    s = max(0, int(time.time() - t))
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = m // 60
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    d = h // 24
    if d < 8:
        return "%dd%dh" % (d, h % 24) if h % 24 else "%dd" % d
    if d < 365 * 2:
        return "%dd" % d
    return "%dy" % (d // 365)


def _col(name, typ="string", fmt="", desc="", prio=0):
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": prio}


def table_columns(res):
    name = _col("Name", fmt="name", desc="Name must be unique within a namespace.")
    age = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when this object was created.")
    extra = {
        "Namespace": ([_col("Status", desc="The status of the namespace")], lambda o: [(o.get("status") or {}).get("phase", "")]),
        "ConfigMap": ([_col("Data", typ="integer")], lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {})]),
        "Secret": ([_col("Type"), _col("Data", typ="integer")], lambda o: [o.get("type", ""), len(o.get("data") or {})]),
        "Deployment": ([_col("Ready"), _col("Up-to-date", typ="integer"), _col("Available", typ="integer")],
                       lambda o: ["%d/%d" % ((o.get("status") or {}).get("readyReplicas", 0), (o.get("spec") or {}).get("replicas", 0)),
                                  (o.get("status") or {}).get("updatedReplicas", 0), (o.get("status") or {}).get("availableReplicas", 0)]),
        "Pod": ([_col("Ready"), _col("Status"), _col("Restarts")],
                lambda o: ["%d/%d" % (sum(1 for c in (o.get("status") or {}).get("containerStatuses") or [] if c.get("ready")),
                                      len((o.get("spec") or {}).get("containers") or [])),
                           (o.get("status") or {}).get("phase", ""),
                           str(sum(c.get("restartCount", 0) for c in (o.get("status") or {}).get("containerStatuses") or []))]),
        "ServiceAccount": ([_col("Secrets", typ="integer")], lambda o: [len(o.get("secrets") or [])]),
        "ReplicaSet": ([_col("Desired", typ="integer"), _col("Current", typ="integer"), _col("Ready", typ="integer")],
                       lambda o: [(o.get("spec") or {}).get("replicas", 0), (o.get("status") or {}).get("replicas", 0),
                                  (o.get("status") or {}).get("readyReplicas", 0)]),
    }
    if res.kind == "Event":
        ecols = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")]
        return ecols, (lambda o: [human_age(o.get("lastTimestamp") or o["metadata"].get("creationTimestamp", "")),
                                  o.get("type", ""), o.get("reason", ""),
                                  "%s/%s" % ((o.get("involvedObject") or {}).get("kind", "").lower(),
                                             (o.get("involvedObject") or {}).get("name", "")),
                                  o.get("message", "")])
    cols, fn = extra.get(res.kind, ([], lambda o: []))
    return [name] + cols + [age], (lambda o: [o["metadata"]["name"]] + fn(o) + [human_age(o["metadata"].get("creationTimestamp", ""))])
