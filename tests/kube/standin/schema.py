"""Known-field tables (for fieldValidation) and the OpenAPI v3 index.

The stand-in does not publish type schemas. /openapi/v3 lists one document
per group/version whose paths carry the operations, their
x-kubernetes-group-version-kind and query parameters (incl. fieldValidation),
which is what kubectl reads to decide that validation happens server-side.
Unknown-field detection covers the fields listed here; a None entry means
"free-form, not checked below this point".
"""
import hashlib
import json

import resources as R

OBJECT_META = {k: None for k in (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields")}

CONTAINER = {k: None for k in (
    "name", "image", "command", "args", "workingDir", "envFrom", "resources", "resizePolicy", "restartPolicy",
    "volumeMounts", "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
    "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin",
    "stdinOnce", "tty")}
CONTAINER["ports"] = [{k: None for k in ("name", "hostPort", "containerPort", "protocol", "hostIP")}]
CONTAINER["env"] = [{k: None for k in ("name", "value", "valueFrom")}]

POD_SPEC = {k: None for k in (
    "volumes", "ephemeralContainers", "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds",
    "dnsPolicy", "nodeSelector", "serviceAccountName", "serviceAccount", "automountServiceAccountToken",
    "nodeName", "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "securityContext",
    "imagePullSecrets", "hostname", "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases",
    "priorityClassName", "priority", "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks",
    "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
    "schedulingGates", "resourceClaims", "resources")}
POD_SPEC["containers"] = [CONTAINER]
POD_SPEC["initContainers"] = [CONTAINER]

BASE = {"apiVersion": None, "kind": None, "metadata": OBJECT_META}
KINDS = {
    "ConfigMap": {"data": None, "binaryData": None, "immutable": None},
    "Secret": {"data": None, "stringData": None, "type": None, "immutable": None},
    "Namespace": {"spec": {"finalizers": None}, "status": None},
    "Pod": {"spec": POD_SPEC, "status": None},
    "Service": {"spec": None, "status": None},
    "ServiceAccount": {"secrets": None, "imagePullSecrets": None, "automountServiceAccountToken": None},
    "Deployment": {"spec": {"replicas": None, "selector": None, "strategy": None, "minReadySeconds": None,
                            "revisionHistoryLimit": None, "paused": None, "progressDeadlineSeconds": None,
                            "template": {"metadata": OBJECT_META, "spec": POD_SPEC}},
                   "status": None},
    "StatefulSet": {"spec": {"replicas": None, "selector": None, "serviceName": None, "minReadySeconds": None,
                             "revisionHistoryLimit": None, "podManagementPolicy": None, "updateStrategy": None,
                             "volumeClaimTemplates": None, "persistentVolumeClaimRetentionPolicy": None,
                             "ordinals": None, "template": {"metadata": OBJECT_META, "spec": POD_SPEC}},
                    "status": None},
    "NetworkPolicy": {"spec": {"podSelector": None, "ingress": None, "egress": None, "policyTypes": None},
                      "status": None},
    "Role": {"rules": [{k: None for k in ("apiGroups", "resources", "resourceNames", "verbs", "nonResourceURLs")}]},
    "RoleBinding": {"subjects": [{k: None for k in ("kind", "apiGroup", "name", "namespace")}],
                    "roleRef": {"apiGroup": None, "kind": None, "name": None}},
    "Scale": {"spec": {"replicas": None}, "status": None},
}
KINDS["ClusterRole"] = dict(KINDS["Role"], aggregationRule=None)
KINDS["ClusterRoleBinding"] = KINDS["RoleBinding"]


def unknown_fields(kind, obj):
    """Return the dotted paths of fields the stand-in knows are not part of kind."""
    if kind not in KINDS:
        return []
    schema = dict(BASE, **KINDS[kind])
    out = []
    _walk(schema, obj, "", out)
    return out


def _walk(schema, value, prefix, out):
    if schema is None:
        return
    if isinstance(schema, list):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(schema[0], item, "%s[%d]" % (prefix, i), out)
        return
    if not isinstance(value, dict):
        return
    for k, v in value.items():
        path = "%s.%s" % (prefix, k) if prefix else k
        if k.startswith("$"):
            continue  # strategic merge patch directives
        if k not in schema:
            out.append(path)
        else:
            _walk(schema[k], v, path, out)


# ------------------------------------------------------------------ OpenAPI v3

def _gv_path(group, version):
    return "apis/%s/%s" % (group, version) if group else "api/%s" % version


def _params(names):
    return [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}} for n in names]


def _op(action, gvk, params):
    return {"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": _params(params),
            "responses": {"200": {"description": "OK"}}}


def gv_document(group, version):
    paths = {}
    for r in R.RESOURCES:
        if r.group != group or r.version != version:
            continue
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        base = "/" + _gv_path(group, version)
        coll = base + ("/namespaces/{namespace}/" if r.namespaced else "/") + r.plural
        if r.create_only:
            paths[coll] = {"post": _op("post", gvk, ["dryRun", "fieldManager", "fieldValidation", "pretty"])}
            continue
        paths[coll] = {"get": _op("list", gvk, ["labelSelector", "fieldSelector", "limit", "continue"]),
                       "post": _op("post", gvk, ["dryRun", "fieldManager", "fieldValidation", "pretty"])}
        item = coll + "/{name}"
        write = ["dryRun", "fieldManager", "fieldValidation", "pretty"]
        paths[item] = {"get": _op("get", gvk, ["pretty"]), "put": _op("put", gvk, write),
                       "patch": _op("patch", gvk, write + ["force"]),
                       "delete": _op("delete", gvk, ["dryRun", "gracePeriodSeconds", "propagationPolicy"])}
        for sub, g, v, k, verbs in r.subresources:
            sgvk = {"group": g, "version": v, "kind": k}
            ops = {}
            if "get" in verbs:
                ops["get"] = _op("get", sgvk, ["pretty"])
            if "update" in verbs:
                ops["put"] = _op("put", sgvk, write)
            if "patch" in verbs:
                ops["patch"] = _op("patch", sgvk, write + ["force"])
            paths[item + "/" + sub] = ops
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": paths,
            "components": {"schemas": {}}}


def v3_index():
    out = {}
    for g, v in R.group_versions():
        doc = json.dumps(gv_document(g, v), sort_keys=True).encode()
        h = hashlib.sha512(doc).hexdigest()[:128].upper()
        out[_gv_path(g, v)] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (_gv_path(g, v), h)}
    return {"paths": out}
