#!/usr/bin/env python3
"""Local Kubernetes API stand-in for rbl's tests. See tests/kube/README.md."""
import argparse
import base64
import copy
import json
import os
import random
import re
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import builtin  # noqa: E402
import controllers  # noqa: E402
import protowire  # noqa: E402
import schema  # noqa: E402
import resources as R  # noqa: E402
from patch import PatchError, PatchFormatError, json_patch, merge_patch, strategic_merge  # noqa: E402
from rbac import Authorizer  # noqa: E402
from labelsel import (SelectorError, field_match, label_match, parse_field_selector,  # noqa: E402
                       parse_label_selector)
from store import Store  # noqa: E402

try:
    import yaml
except ImportError:
    # python3-yaml from apt lives in Debian's dist-packages, which a
    # non-system python3 (pyenv, venv) does not search
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import yaml
    except ImportError:  # fixtures may still be JSON
        yaml = None

SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.8",
    "compiler": "gc", "platform": "linux/amd64",
}
GENERATION_KINDS = ("Deployment", "NetworkPolicy")
STATUS_KINDS = ("Deployment", "Pod", "Namespace", "Service")
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           406: "NotAcceptable", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _epoch(ts):
    import calendar
    return calendar.timegm(time.strptime(ts.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason}
        if self.details:
            st["details"] = self.details
        st["code"] = self.code
        return st


def _details(res, name=None):
    d = {}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    return d


def not_found(res, name):
    return ApiError(404, '%s "%s" not found' % (res.group_resource, name), "NotFound", _details(res, name))


def conflict(res, name):
    return ApiError(409, 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply '
                    'your changes to the latest version and try again' % (res.group_resource, name),
                    "Conflict", _details(res, name))


# Kinds whose registry strategy refuses an update without metadata.resourceVersion (Kubernetes'
# AllowUnconditionalUpdate() == false): a Lease PUT must name the version it read, so a lease client
# that forgets it fails here as it would against a real API server instead of silently winning.
NO_UNCONDITIONAL_UPDATE = ("leases",)


def rv_required(res, name):
    """The API server's answer to such an update (the kind it names is the resource, as it does)."""
    msg = 'Invalid value: 0x0: must be specified for an update'
    d = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    d["causes"] = [{"reason": "FieldValueInvalid", "message": msg, "field": "metadata.resourceVersion"}]
    return ApiError(422, '%s "%s" is invalid: metadata.resourceVersion: %s' % (res.group_resource, name, msg),
                    "Invalid", d)


# metav1.MicroTime fields: the API server decodes them with Go's time.Parse(RFC3339Micro), so a value
# that is not "YYYY-MM-DDTHH:MM:SS.ffffff" plus "Z" or "+hh:mm" (exactly six fraction digits) fails
# the decode and the request is 400 BadRequest, before any validation. The message follows
# time.ParseError and apiserver's transformDecodeError.
MICROTIME_FIELDS = {"Lease": ("acquireTime", "renewTime")}
RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"


def _goquote(v):
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _days_in(month, year):
    if month == 2:
        return 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_microtime(v):
    """None when v decodes as a MicroTime, else Go's error text."""
    whole = v

    def perr(elem, rest, msg=""):
        if msg:
            return "parsing time %s%s" % (_goquote(whole), msg)
        return "parsing time %s as %s: cannot parse %s as %s" % (_goquote(whole), _goquote(RFC3339_MICRO),
                                                                  _goquote(rest), _goquote(elem))

    def num(rest, fixed):
        if not rest[:1].isdigit() or not rest[:1].isascii():
            return None, rest
        if not rest[1:2].isdigit() or not rest[1:2].isascii():
            return (None, rest) if fixed else (int(rest[0]), rest[1:])
        return int(rest[:2]), rest[2:]

    rest = v
    if len(rest) < 4 or not all(c in "0123456789" for c in rest[:4]):
        return perr("2006", rest)
    year, rest = int(rest[:4]), rest[4:]
    vals = {}
    for lit, elem, fixed, lo, hi, name in (("-", "01", True, 1, 12, "month"), ("-", "02", True, 1, 31, None),
                                           ("T", "15", False, 0, 23, "hour"), (":", "04", True, 0, 59, "minute"),
                                           (":", "05", True, 0, 59, "second")):
        if not rest.startswith(lit):
            return perr(lit, rest)
        rest = rest[len(lit):]
        hold = rest
        n, rest = num(rest, fixed)
        if n is None:
            return perr(elem, hold)
        if name and not lo <= n <= hi:
            return perr(elem, rest, ": %s out of range" % name)
        vals[elem] = n
    if len(rest) < 7 or rest[0] not in ".," or not all(c in "0123456789" for c in rest[1:7]):
        return perr(".000000", rest)
    rest = rest[7:]
    if rest.startswith("Z"):
        rest = rest[1:]
    elif (len(rest) >= 6 and rest[0] in "+-" and rest[3] == ":" and rest[1:3].isdigit() and
          rest[4:6].isdigit() and rest[1:3].isascii() and rest[4:6].isascii()):
        rest = rest[6:]
    else:
        return perr("Z07:00", rest)
    if rest:
        return perr("", rest, ": extra text: %s" % _goquote(rest))
    if vals["02"] < 1 or vals["02"] > _days_in(vals["01"], year):
        return perr("", rest, ": day out of range")
    return None


def check_microtimes(kind, version, obj):
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        return
    for f in MICROTIME_FIELDS.get(kind, ()):
        v = spec.get(f)
        if v is None:
            continue
        if not isinstance(v, str):
            err = "json: cannot unmarshal %s into Go value of type string" % (
                "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else
                "bool" if isinstance(v, bool) else "object" if isinstance(v, dict) else "array")
        else:
            err = parse_microtime(v)
        if err:
            raise ApiError(400, '%s in version "%s" cannot be handled as a %s: %s' % (kind, version, kind, err),
                           "BadRequest")


def invalid(res, name, causes):
    parts, cs = [], []
    for field, msg, value in causes:
        if msg in ("Required value",) or value is None:
            text = "%s: %s" % (field, msg)
            cs.append({"reason": "FieldValueRequired" if msg == "Required value" else "FieldValueInvalid",
                       "message": msg, "field": field})
        else:
            text = "%s: Invalid value: %s: %s" % (field, json.dumps(value), msg)
            cs.append({"reason": "FieldValueInvalid", "message": "Invalid value: %s: %s" % (json.dumps(value), msg),
                       "field": field})
        parts.append(text)
    msg = '%s "%s" is invalid: %s' % (res.kind, name, parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")
    d = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = res.kind
    d["causes"] = cs
    return ApiError(422, msg, "Invalid", d)


SPECIAL_KEYS = ("kind", "apiVersion", "metadata", "status")


def _strip_for_compare(o):
    o = copy.deepcopy(o)
    md = o.get("metadata") or {}
    md.pop("resourceVersion", None)
    md.pop("managedFields", None)
    return o


class Cluster:
    """All API semantics; independent of HTTP."""

    def __init__(self, controllers=True, rollout_ms=0):
        self.store = Store()
        self.authz = Authorizer(self.store)
        self.controllers = controllers
        self.ctrl = globals()["controllers"].Controllers(self.store, rollout_ms) if controllers else None

    # ------------------------------------------------------------ fixtures
    def load_fixtures(self, paths):
        docs = []
        for p in paths:
            files = [p]
            if os.path.isdir(p):
                files = sorted(os.path.join(p, f) for f in os.listdir(p)
                               if f.endswith((".yaml", ".yml", ".json")))
            for f in files:
                with open(f) as fh:
                    text = fh.read()
                if yaml is None:
                    loaded = [json.loads(text)]
                else:
                    loaded = list(yaml.safe_load_all(text))
                for d in loaded:
                    if not d:
                        continue
                    if d.get("kind", "").endswith("List") and isinstance(d.get("items"), list):
                        docs.extend(d["items"])
                    else:
                        docs.append(d)
        defined = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
        seeds = [b for b in builtin.builtin_objects() if (b["kind"], b["metadata"]["name"]) not in defined]
        all_docs = seeds + docs
        all_docs.sort(key=lambda d: 0 if d.get("kind") == "Namespace" else 1)
        for d in all_docs:
            res = R.by_kind(d.get("apiVersion"), d.get("kind"))
            if res is None or res.create_only:
                raise SystemExit("fixture: unsupported apiVersion/kind %s/%s" % (d.get("apiVersion"), d.get("kind")))
            md = d.setdefault("metadata", {})
            ns = md.get("namespace") if res.namespaced else None
            if res.namespaced and not ns:
                ns = md["namespace"] = "default"
            try:
                self._prepare_new(res, ns, d, keep_status=True)
            except ApiError as e:
                raise SystemExit("fixture %s/%s: %s" % (d.get("kind"), md.get("name"), e.message))
            if self.ctrl and res.kind == "Deployment":
                self.ctrl.sync_deployment(d, None, fixture=True)
            d["metadata"]["resourceVersion"] = self.store.next_rv()
            self.store.put(res.plural, ns, md["name"], d)

    # ------------------------------------------------------------- helpers
    def _check_ns(self, ns):
        if self.store.get_raw("namespaces", None, ns) is None:
            raise ApiError(404, 'namespaces "%s" not found' % ns, "NotFound", {"name": ns, "kind": "namespaces"})

    def _prepare_new(self, res, ns, obj, keep_status=False):
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise ApiError(400, "metadata must be an object")
        if res.namespaced:
            if md.get("namespace") not in (None, "", ns):
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                               "the request", "BadRequest")
            md["namespace"] = ns
            self._check_ns(ns)
        else:
            md.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if not md.get("name"):
            if md.get("generateName"):
                md["name"] = md["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            else:
                raise invalid(res, "", [("metadata.name", "Required value", None)])
        name = md["name"]
        err = R.validate_name(res, name)
        if err:
            raise invalid(res, name, [("metadata.name", err, name)])
        try:
            R.normalize(res, obj)
        except R.BadRequest as e:
            raise ApiError(400, str(e))
        if not keep_status and res.kind in ("Deployment",):
            obj.pop("status", None)
        R.apply_defaults(res, obj)
        causes = R.validate_object(res, obj)
        if causes:
            raise invalid(res, name, causes)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            md.pop(k, None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now()
        if res.kind in GENERATION_KINDS:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        if self.controllers and not (keep_status and obj.get("status")) and res.kind != "Deployment":
            R.simulate_controllers(res, obj)  # fixtures that declare a status keep it
        return obj

    def _authorize(self, user, groups, attrs, res=None, name=None):
        ok, _ = self.authz.authorize(user, groups, attrs)
        if ok:
            return
        what = attrs.get("resource", "")
        if attrs.get("subresource"):
            what += "/" + attrs["subresource"]
        if attrs.get("nonResource"):
            raise ApiError(403, 'forbidden: User "%s" cannot %s path "%s"' % (user, attrs["verb"], attrs["path"]),
                           "Forbidden", {})
        subject = '%s "%s"' % (res.group_resource, name) if name else res.group_resource
        scope = ('in the namespace "%s"' % attrs["namespace"]) if attrs.get("namespace") else "at the cluster scope"
        msg = '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s" %s' % (
            subject, user, attrs["verb"], what, attrs.get("group", ""), scope)
        raise ApiError(403, msg, "Forbidden", _details(res, name))

    # ----------------------------------------------------------------- read
    def get(self, res, ns, name):
        # like the real server: a missing namespace reads as "<resource> not found"
        with self.store.lock:
            o = self.store.get(res.plural, ns, name)
        if o is None:
            raise not_found(res, name)
        return o

    def _selectors(self, res, query):
        try:
            lreqs = parse_label_selector(query.get("labelSelector"))
        except SelectorError as e:
            msg = str(e)
            raise ApiError(400, msg if msg.startswith("unable to parse") else "unable to parse requirement: " + msg,
                           "BadRequest")
        try:
            freqs = parse_field_selector(query.get("fieldSelector"), res.field_selectors)
        except SelectorError as e:
            raise ApiError(400, str(e), "BadRequest")
        return lreqs, freqs

    def list(self, res, ns, query):
        lreqs, freqs = self._selectors(res, query)
        with self.store.lock:
            items = self.store.list_raw(res.plural, ns if res.namespaced else None)
            items = [copy.deepcopy(o) for o in items
                     if label_match(lreqs, o["metadata"].get("labels")) and field_match(freqs, o)]
            rv = self.store.current_rv()
        start = 0
        cont = query.get("continue")
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode()).decode())
                start = int(tok["start"])
            except Exception:
                raise ApiError(400, "continue key is not valid: illegal base64 data", "BadRequest")
        limit = query.get("limit")
        md = {"resourceVersion": rv}
        if limit not in (None, "", "0"):
            try:
                n = int(limit)
            except ValueError:
                raise ApiError(400, "limit must be an integer")
            end = start + n
            if end < len(items):
                md["continue"] = base64.urlsafe_b64encode(json.dumps({"start": end, "rv": rv}).encode()).decode()
                md["remainingItemCount"] = len(items) - end
            items = items[start:end]
        else:
            items = items[start:]
        return md, items

    # ---------------------------------------------------------------- write
    def create(self, res, ns, obj, dry_run):
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        self._check_type(res, obj)
        with self.store.lock:
            obj = self._prepare_new(res, ns, copy.deepcopy(obj))
            name = obj["metadata"]["name"]
            if self.store.get_raw(res.plural, ns, name) is not None:
                raise ApiError(409, '%s "%s" already exists' % (res.group_resource, name), "AlreadyExists",
                               _details(res, name))
            if self.controllers and res.kind == "Deployment":
                if dry_run:
                    R.simulate_controllers(res, obj)
                else:
                    self.ctrl.sync_deployment(obj, None)
            if dry_run:
                return obj
            obj["metadata"]["resourceVersion"] = self.store.next_rv()
            self.store.put(res.plural, ns, name, obj)
            return copy.deepcopy(obj)

    def _check_type(self, res, obj):
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if kind not in (None, "", res.kind) or av not in (None, "", res.api_version):
            raise ApiError(400, "the API version in the data (%s) does not match the expected API version (%s)"
                           % (av, res.api_version) if kind in (None, "", res.kind)
                           else "the kind in the data (%s) does not match the expected kind (%s)" % (kind, res.kind),
                           "BadRequest")

    def _commit_update(self, res, ns, name, old, new, dry_run, subresource=None):
        """new: full object as proposed by the client (PUT body or patch result)."""
        if not isinstance(new, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        md = new.get("metadata")
        if not isinstance(md, dict):
            md = new["metadata"] = {}
        if md.get("name") not in (None, "", name):
            raise ApiError(400, "the name of the object (%s) does not match the name on the URL (%s)"
                           % (md.get("name"), name), "BadRequest")
        if res.namespaced and md.get("namespace") not in (None, "", ns):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                           "request", "BadRequest")
        self._check_type(res, new)
        rv = md.get("resourceVersion")
        if rv not in (None, "") and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if md.get("uid") not in (None, "", old["metadata"]["uid"]):
            raise ApiError(409, 'Precondition failed: UID in precondition: %s, UID in object meta: %s'
                           % (md.get("uid"), old["metadata"]["uid"]), "Conflict", _details(res, name))
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            result["apiVersion"], result["kind"] = res.api_version, res.kind
            rmd = result["metadata"]
            rmd["name"] = name
            if res.namespaced:
                rmd["namespace"] = ns
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if k in old["metadata"]:
                    rmd[k] = old["metadata"][k]
                else:
                    rmd.pop(k, None)
            rmd.pop("managedFields", None)
            if res.kind in STATUS_KINDS:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            try:
                R.normalize(res, result)
            except R.BadRequest as e:
                raise ApiError(400, str(e))
            R.apply_defaults(res, result)
            causes = R.validate_object(res, result)
            if causes:
                raise invalid(res, name, causes)
            if res.kind == "Deployment" and (old.get("spec") or {}).get("selector") != (result.get("spec") or {}).get("selector"):
                raise invalid(res, name, [("spec.selector", "field is immutable", result["spec"].get("selector"))])
            if res.kind in GENERATION_KINDS and old.get("spec") != result.get("spec"):
                rmd["generation"] = old["metadata"].get("generation", 1) + 1
            if self.controllers and res.kind == "Deployment" and not dry_run:
                self.ctrl.sync_deployment(result, old)
            elif self.controllers:
                R.simulate_controllers(res, result)
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _strip_for_compare(result) == _strip_for_compare(old):
            return copy.deepcopy(old)  # no-op write: nothing stored, resourceVersion unchanged
        if dry_run:
            return result
        result["metadata"]["resourceVersion"] = self.store.next_rv()
        self.store.put(res.plural, ns, name, result)
        return copy.deepcopy(result)

    def update(self, res, ns, name, body, dry_run, subresource=None):
        with self.store.lock:
            old = self.store.get_raw(res.plural, ns, name)
            if old is None:
                raise not_found(res, name)
            md = body.get("metadata") if isinstance(body, dict) else None
            if (subresource is None and res.plural in NO_UNCONDITIONAL_UPDATE
                    and not (isinstance(md, dict) and md.get("resourceVersion"))):
                raise rv_required(res, name)
            if subresource == "scale":
                return self._update_scale(res, ns, name, old, body, dry_run)
            return self._commit_update(res, ns, name, old, copy.deepcopy(body), dry_run, subresource)

    def patch(self, res, ns, name, ctype, body, dry_run, subresource=None):
        try:
            p = json.loads(body.decode("utf-8") if body else "null")
        except ValueError as e:
            raise ApiError(400, "error decoding patch: %s" % e, "BadRequest")
        with self.store.lock:
            old = self.store.get_raw(res.plural, ns, name)
            if old is None:
                raise not_found(res, name)
            cur = self.scale_of(res, old) if subresource == "scale" else copy.deepcopy(old)
            kind = "Scale" if subresource == "scale" else res.kind
            try:
                if ctype == "application/merge-patch+json":
                    if not isinstance(p, dict):
                        raise PatchFormatError("merge patch must be a JSON object")
                    new = merge_patch(cur, p)
                elif ctype == "application/json-patch+json":
                    new = json_patch(cur, p)
                else:
                    new = strategic_merge(cur, p, kind)
            except PatchFormatError as e:
                raise ApiError(400, str(e), "BadRequest")
            except PatchError as e:
                raise ApiError(422, "the server rejected our request due to an error in our request", "Invalid",
                               {"causes": [{"reason": "UnexpectedServerResponse", "message": str(e)}]}) if ctype == "application/json-patch+json" \
                    else ApiError(422, str(e), "Invalid", _details(res, name))
            if subresource == "scale":
                return self._update_scale(res, ns, name, old, new, dry_run)
            return self._commit_update(res, ns, name, old, new, dry_run, subresource)

    def scale_of(self, res, obj):
        sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        md = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": md["name"], "namespace": md.get("namespace"), "uid": md["uid"],
                             "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join("%s=%s" % kv for kv in sorted(sel.items()))}}

    def _update_scale(self, res, ns, name, old, scale, dry_run):
        if not isinstance(scale, dict):
            raise ApiError(400, "the body of the request must be a Scale object")
        md = scale.get("metadata") or {}
        if md.get("name") not in (None, "", name):
            raise ApiError(400, "the name of the object (%s) does not match the name on the URL (%s)"
                           % (md.get("name"), name), "BadRequest")
        rv = md.get("resourceVersion")
        if rv not in (None, "") and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        reps = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(reps, int) or isinstance(reps, bool) or reps < 0:
            raise ApiError(422, 'Scale.autoscaling "%s" is invalid: spec.replicas: Invalid value: %s: must be greater '
                           'than or equal to 0' % (name, json.dumps(reps)), "Invalid",
                           {"name": name, "group": "autoscaling", "kind": "Scale",
                            "causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                        "message": "Invalid value: %s: must be greater than or equal to 0"
                                        % json.dumps(reps)}]})
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = reps
        new["metadata"].pop("resourceVersion", None)
        result = self._commit_update(res, ns, name, old, new, dry_run)
        return self.scale_of(res, result if result.get("metadata", {}).get("resourceVersion") else
                             dict(result, metadata=dict(result["metadata"], resourceVersion="")))

    def delete(self, res, ns, name, opts, dry_run):
        with self.store.lock:
            old = self.store.get_raw(res.plural, ns, name)
            if old is None:
                raise not_found(res, name)
            pre = (opts or {}).get("preconditions") or {}
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(409, 'Operation cannot be fulfilled on %s "%s": the ResourceVersion in the '
                               'precondition (%s) does not match the ResourceVersion in record (%s). The object '
                               'might have been modified' % (res.group_resource, name, pre["resourceVersion"],
                                                             old["metadata"]["resourceVersion"]),
                               "Conflict", _details(res, name))
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, 'Precondition failed: UID in precondition: %s, UID in object meta: %s'
                               % (pre["uid"], old["metadata"]["uid"]), "Conflict", _details(res, name))
            if res.plural == "namespaces":
                out = copy.deepcopy(old)
                out["metadata"]["deletionTimestamp"] = now()
                out["status"] = {"phase": "Terminating"}
                if not dry_run:
                    self.store.delete(res.plural, ns, name)
                    self.store.delete_namespace_contents(name)
                return out
            if not dry_run:
                self.store.delete(res.plural, ns, name)
                self._collect_garbage(ns, old["metadata"]["uid"])
                if self.ctrl and res.plural == "pods" and not res.group:
                    self.ctrl.pod_deleted(ns, old)
            d = _details(res, name)
            d["uid"] = old["metadata"]["uid"]
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}

    def _collect_garbage(self, ns, uid):
        """Background cascading deletion: what the deleted object controlled goes too."""
        for plural in ("replicasets", "pods"):
            for o in list(self.store.list_raw(plural, ns)):
                if controllers.owned_by(o, uid):
                    self.store.delete(plural, ns, o["metadata"]["name"])
                    self._collect_garbage(ns, o["metadata"]["uid"])

    # ----------------------------------------------------------------- logs
    LOG_ANN = "standin.rbl.io/log."  # + container name: that container's log
    PREVIOUS_ANN = "standin.rbl.io/previous-log."  # + container name: its previous instance's log
    TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (.*)$")

    def pod_log(self, pod, query):
        """The pods/log subresource: lines from the pod's annotations (a line may start with its
        RFC 3339 time; others are timed at the pod's creation)."""
        md, name = pod["metadata"], pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in (spec.get("containers") or [])]
        every = names + [c.get("name") for c in (spec.get("initContainers") or [])]
        c = query.get("container")
        if not c:
            c = (md.get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
            if not c:
                if len(names) != 1:
                    raise ApiError(400, "a container name must be specified for pod %s, choose one of: [%s]"
                                   % (name, " ".join(names)), "BadRequest")
                c = names[0]
        if c not in every:
            raise ApiError(400, "container %s is not valid for pod %s" % (c, name), "BadRequest")
        prev = query.get("previous") in ("true", "1")
        text = (md.get("annotations") or {}).get((self.PREVIOUS_ANN if prev else self.LOG_ANN) + c)
        if text is None and prev:
            raise ApiError(400, 'previous terminated container "%s" in pod "%s" not found' % (c, name), "BadRequest")
        born = md.get("creationTimestamp") or now()
        lines = []
        for line in (text or "").splitlines():
            m = self.TS.match(line)
            lines.append((m.group(1), m.group(2)) if m else (born, line))
        if query.get("sinceSeconds"):
            try:
                since = int(query["sinceSeconds"])
            except ValueError:
                raise ApiError(400, "sinceSeconds must be an integer", "BadRequest")
            if since < 1:
                raise ApiError(422, "sinceSeconds: Invalid value: %d: must be greater than 0" % since, "Invalid")
            cut = time.time() - since
            lines = [l for l in lines if _epoch(l[0]) >= cut]
        if query.get("tailLines"):
            try:
                n = int(query["tailLines"])
            except ValueError:
                raise ApiError(400, "tailLines must be an integer", "BadRequest")
            lines = lines[-n:] if n > 0 else []
        stamp = query.get("timestamps") in ("true", "1")
        out = "".join(("%s %s\n" % l) if stamp else (l[1] + "\n") for l in lines).encode()
        if query.get("limitBytes"):
            out = out[: int(query["limitBytes"])]
        return out

    # ---------------------------------------------------------------- watch
    def watch_open(self, res, ns, query):
        """Validate a watch request; return (matches, initial objects, last rv)."""
        lreqs, freqs = self._selectors(res, query)

        def matches(o):
            if res.namespaced and ns and o["metadata"].get("namespace") != ns:
                return False
            return label_match(lreqs, o["metadata"].get("labels")) and field_match(freqs, o)

        rv = query.get("resourceVersion") or ""
        initial = []
        with self.store.lock:
            if rv in ("", "0") or query.get("sendInitialEvents") == "true":
                initial = [copy.deepcopy(o) for o in self.store.list_raw(res.plural) if matches(o)]
                last = self.store.rv
            else:
                try:
                    last = int(rv)
                except ValueError:
                    raise ApiError(400, 'invalid resource version "%s"' % rv)
                if last < self.store.oldest_rv:
                    raise ApiError(410, "too old resource version: %d (%d)" % (last, self.store.oldest_rv),
                                   "Expired")
        return matches, initial, last

    def watch_wait(self, last, timeout):
        """Events after rv `last`, waiting up to timeout seconds for some."""
        with self.store.cond:
            ev = self.store.events_after(last)
            if not ev and timeout > 0:
                self.store.cond.wait(timeout)
                ev = self.store.events_after(last)
            return ev

    # -------------------------------------------------------------- reviews
    def review(self, res, ns, body, user, groups):
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        self._check_type(res, body)
        spec = body.get("spec") or {}
        if res.kind == "SelfSubjectReview":
            return {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"creationTimestamp": None},
                    "status": {"userInfo": {"username": user, "groups": groups}}}
        if res.kind == "SelfSubjectRulesReview":
            rr, nrr = self.authz.rules_for(user, groups, spec.get("namespace") or "")
            return {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"creationTimestamp": None},
                    "spec": spec, "status": {"resourceRules": rr, "nonResourceRules": nrr, "incomplete": False}}
        if res.kind == "SelfSubjectAccessReview":
            u, g = user, groups
        else:
            u, g = spec.get("user", ""), list(spec.get("groups") or [])
            if not u and not g:
                raise invalid(res, "", [("spec.user", "Required value", None)])
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if ra:
            attrs = {"verb": ra.get("verb", ""), "group": ra.get("group", ""), "resource": ra.get("resource", ""),
                     "subresource": ra.get("subresource", ""), "name": ra.get("name", ""),
                     "namespace": ns if res.kind == "LocalSubjectAccessReview" else ra.get("namespace", "")}
        elif nra:
            attrs = {"nonResource": True, "verb": nra.get("verb", ""), "path": nra.get("path", "")}
        else:
            raise invalid(res, "", [("spec.resourceAttributes", "Required value", None)])
        allowed, reason = self.authz.authorize(u, g, attrs)
        out = {"kind": res.kind, "apiVersion": res.api_version,
               "metadata": {"creationTimestamp": None}, "spec": spec,
               "status": {"allowed": allowed}}
        if res.kind == "LocalSubjectAccessReview":
            out["metadata"]["namespace"] = ns
        if reason:
            out["status"]["reason"] = reason
        return out


# ======================================================================= HTTP

def parse_accept(header):
    out = []
    for part in (header or "").split(","):
        items = [x.strip() for x in part.split(";")]
        if not items[0]:
            continue
        params = {}
        for it in items[1:]:
            if "=" in it:
                k, v = it.split("=", 1)
                params[k.strip()] = v.strip()
        out.append((items[0].lower(), params))
    return out


def resource_entry(r, legacy):
    if legacy:
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": r.verbs}
        if r.short:
            e["shortNames"] = r.short
        if r.categories:
            e["categories"] = r.categories
        out = [e]
        for sub, g, v, k, verbs in r.subresources:
            se = {"name": "%s/%s" % (r.plural, sub), "singularName": "", "namespaced": r.namespaced,
                  "kind": k, "verbs": verbs}
            if g != r.group or v != r.version:
                se["group"], se["version"] = g, v
            out.append(se)
        return out
    e = {"resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
         "scope": "Namespaced" if r.namespaced else "Cluster", "singularResource": r.singular, "verbs": r.verbs}
    if r.short:
        e["shortNames"] = r.short
    if r.categories:
        e["categories"] = r.categories
    if r.subresources:
        e["subresources"] = [{"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k},
                              "verbs": verbs} for sub, g, v, k, verbs in r.subresources]
    return [e]


def aggregated(core, gv_version):
    groups = []
    for g, v in R.group_versions():
        if (g == "") != core:
            continue
        res = [e for r in R.RESOURCES if r.group == g and r.version == v for e in resource_entry(r, False)]
        groups.append({"metadata": {"name": g, "creationTimestamp": None},
                       "versions": [{"version": v, "resources": res, "freshness": "Current"}]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/" + gv_version,
            "metadata": {}, "items": groups}


def api_group(g):
    vs = [{"groupVersion": "%s/%s" % (g, v), "version": v} for gg, v in R.group_versions() if gg == g]
    return {"name": g, "versions": vs, "preferredVersion": vs[0]}


class Fault:
    def __init__(self, spec):
        parts = spec.split()
        if len(parts) not in (3, 4):
            raise SystemExit("--fail wants 'METHOD PATH_REGEX STATUS [COUNT]', got %r" % spec)
        self.method = parts[0].upper()
        self.regex = re.compile(parts[1])
        self.status = parts[2]
        if self.status not in ("truncate", "hang") and not self.status.isdigit():
            raise SystemExit("--fail status must be a number, 'truncate' or 'hang': %r" % spec)
        self.count = int(parts[3]) if len(parts) == 4 else None

    def take(self, method, path):
        if self.method not in ("*", method) or not self.regex.fullmatch(path):
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        return True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, cfg):
        self.cfg = cfg
        self.ssl_ctx = cfg.ssl_ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_ctx is not None:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-standin"

    def log_message(self, fmt, *args):
        if self.server.cfg.verbose:
            sys.stderr.write("standin: " + (fmt % args) + "\n")

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                if self.server.cfg.verbose:
                    sys.stderr.write("standin: TLS handshake failed: %s\n" % e)
                self.handshake_failed = True
            self.request.settimeout(None)
        super().setup()

    def handle(self):
        if getattr(self, "handshake_failed", False):
            return
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, socket.timeout):
            pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_OPTIONS(self):
        self.dispatch("OPTIONS")

    # --------------------------------------------------------------- plumbing
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = b""
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline().strip():
                        pass
                    return data
                data += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def authenticate(self):
        cfg = self.server.cfg
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            tok = auth[7:].strip()
            if tok in cfg.tokens:
                user, groups = cfg.tokens[tok]
                return user, groups + ["system:authenticated"]
            return None  # an invalid token is rejected even if a client cert is present
        if isinstance(self.request, ssl.SSLSocket) and cfg.client_ca:
            cert = self.request.getpeercert()
            if cert:
                cn, orgs = None, []
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
                        elif k == "organizationName":
                            orgs.append(v)
                if cn:
                    return cn, orgs + ["system:authenticated"]
        if cfg.anonymous:
            return cfg.anonymous, ["system:unauthenticated"]
        return None

    def send_json(self, code, obj, ctype="application/json"):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        self.send_raw(code, data, ctype)

    def send_raw(self, code, data, ctype, extra=None):
        self.resp_status, self.resp_ctype = code, ctype
        cfg = self.server.cfg
        for d in cfg.answer_delays:  # applied already: only the answer is late
            meth, path_re, ms = d[0], d[1], d[2]
            if meth in (None, self.command) and path_re.fullmatch(self.req_path or ""):
                with cfg.fault_lock:
                    if d[3] is not None:
                        if d[3] <= 0:
                            continue
                        d[3] -= 1
                time.sleep(ms / 1000.0)
        if self.fault == "truncate":
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data) + 1024))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        for w in getattr(self, "warnings", []):
            self.send_header("Warning", '299 - %s' % json.dumps(w))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def write_log(self, user):
        cfg = self.server.cfg
        if not cfg.log:
            return
        rec = {"ts": time.time(), "method": self.command, "path": self.req_path, "query": self.req_query,
               "user": user, "status": self.resp_status, "content_type": self.headers.get("Content-Type"),
               "accept": self.headers.get("Accept"), "response_content_type": self.resp_ctype, "body": None}
        if self.req_body:
            try:
                rec["body"] = self.req_body.decode("utf-8")
            except UnicodeDecodeError:
                rec["body_base64"] = base64.b64encode(self.req_body).decode()
            if self.req_body.startswith(protowire.MAGIC):
                try:
                    rec["body"] = json.dumps(protowire.decode(self.req_body)[2], separators=(",", ":"))
                except protowire.ProtoError:
                    rec["body"] = None
                    rec["body_base64"] = base64.b64encode(self.req_body).decode()
        if self.fault:
            rec["fault"] = self.fault
        with cfg.log_lock:
            cfg.log.write(json.dumps(rec) + "\n")
            cfg.log.flush()

    def dispatch(self, method):
        cfg = self.server.cfg
        raw = self.path
        self.req_path, _, self.req_query = raw.partition("?")
        self.resp_status, self.resp_ctype, self.fault = None, None, None
        self.warnings = []
        self.logged = False
        self.user = None
        try:
            self.req_body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        ident = self.authenticate()
        user = ident[0] if ident else None
        self.user = user
        try:
            if ident is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            for meth, path_re, ms, _ in cfg.delays:
                if meth in (None, method) and path_re.fullmatch(self.req_path):
                    time.sleep(ms / 1000.0)
            fault = None
            with cfg.fault_lock:
                for f in cfg.faults:
                    if f.take(method, self.req_path):
                        fault = f.status
                        break
            if fault == "hang":
                self.fault = "hang"
                self.write_log(user)
                cfg.stopping.wait()
                self.close_connection = True
                return
            if fault == "truncate":
                self.fault = "truncate"
            elif fault is not None:
                code = int(fault)
                raise ApiError(code, "injected fault: %s %s -> %d" % (method, self.req_path, code))
            self.route(method, ident)
        except ApiError as e:
            self.send_json(e.code, e.status())
        except Exception as e:  # never leave a client without an answer
            import traceback
            traceback.print_exc()
            self.send_json(500, ApiError(500, "Internal error occurred: %s" % e, "InternalError").status())
        finally:
            if self.fault != "hang" and not self.logged:
                self.write_log(user)

    # ----------------------------------------------------------------- routing
    def route(self, method, ident):
        cfg, cluster = self.server.cfg, self.server.cfg.cluster
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(self.req_query, keep_blank_values=True).items()}
        raw_segs = self.req_path.split("/")[1:]
        if raw_segs and raw_segs[-1] == "":
            raw_segs = raw_segs[:-1]
        segs = []
        for s in raw_segs:
            d = urllib.parse.unquote(s)
            if d == "" or "/" in d or d in (".", ".."):
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            segs.append(d)
        user, groups = ident
        accept = parse_accept(self.headers.get("Accept"))

        if not segs or segs[0] in ("version", "healthz", "livez", "readyz", "openapi", "api", "apis") and (
                segs[0] not in ("api", "apis") or len(segs) <= (2 if segs[0] == "api" else 3)):
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "the server does not allow this method on the requested resource",
                               "MethodNotAllowed", {})
            if cfg.rbac:
                cluster._authorize(user, groups, {"nonResource": True, "verb": "get", "path": self.req_path})
            return self.non_resource(segs, accept)

        if segs[0] == "api" and segs[1] == "v1":
            group, version, rest = "", "v1", segs[2:]
        elif segs[0] == "apis" and len(segs) > 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        ns = name = sub = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        res = R.find(group, version, rest[0])
        if res is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if len(rest) >= 2:
            name = rest[1]
        if len(rest) == 3:
            sub = rest[2]
            if not res.has_sub(sub):
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if res.namespaced and name is not None and ns is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if not res.namespaced and ns is not None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

        collection = name is None
        dry = query.get("dryRun")
        if dry not in (None, "", "All"):
            raise ApiError(400, 'Invalid dry run value: "%s" is not supported, only "All" is accepted' % dry)
        dry_run = dry == "All"
        verb = {"GET": "list" if collection else "get", "HEAD": "list" if collection else "get",
                "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "deletecollection" if collection else "delete"}.get(method)
        if method == "GET" and query.get("watch") in ("true", "1"):
            verb = "watch"
        if verb is None or (res.create_only and verb != "create") or (method == "POST" and not collection) or \
                (method in ("PUT", "PATCH") and collection):
            raise ApiError(405, "the server does not allow this method on the requested resource",
                           "MethodNotAllowed", {})
        if cfg.rbac:
            cluster._authorize(user, groups, {"verb": verb, "group": group, "resource": res.plural,
                                              "subresource": sub or "", "name": name or "",
                                              "namespace": ns or ""}, res, name)
        if verb == "watch":
            return self.serve_watch(res, ns, name, query)

        body = self.req_body
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

        def decode():
            if not body:
                raise ApiError(400, "the body of the request was empty", "BadRequest")
            if ctype in ("application/json", ""):
                try:
                    return json.loads(body.decode("utf-8"))
                except ValueError as e:
                    raise ApiError(400, "error decoding request body: %s" % e, "BadRequest")
            if ctype in ("application/yaml", "application/x-yaml") and yaml is not None:
                try:
                    return yaml.safe_load(body.decode("utf-8"))
                except yaml.YAMLError as e:
                    raise ApiError(400, "error decoding YAML: %s" % e, "BadRequest")
            if ctype == "application/vnd.kubernetes.protobuf":
                try:
                    return protowire.decode(body)[2]
                except protowire.ProtoError as e:
                    raise ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                   "include: application/json, application/yaml (%s)" % e, "UnsupportedMediaType", {})
            raise ApiError(415, 'the body of the request was in an unknown format - accepted media types include: '
                           'application/json, application/yaml, application/vnd.kubernetes.protobuf',
                           "UnsupportedMediaType", {})

        fv = query.get("fieldValidation") or "Warn"
        if fv not in ("Ignore", "Warn", "Strict"):
            raise ApiError(400, "fieldValidation parameter unsupported: %s" % fv, "BadRequest")

        def check_fields(obj, kind, whole_object):
            if fv == "Ignore":
                return
            unknown = schema.unknown_fields(kind, obj)
            if not unknown:
                return
            if fv == "Strict":
                msg = "strict decoding error: " + ", ".join('unknown field "%s"' % u for u in unknown)
                if whole_object:
                    msg = '%s in version "%s" cannot be handled as a %s: %s' % (kind, version, kind, msg)
                raise ApiError(400, msg, "BadRequest")
            self.warnings += ['unknown field "%s"' % u for u in unknown]

        if res.create_only:
            return self.send_json(201, cluster.review(res, ns, decode(), user, groups))
        if verb == "list":
            md, items = cluster.list(res, ns, query)
            return self.send_listing(res, md, items, accept, query)
        if verb == "get":
            obj = cluster.get(res, ns, name)
            if sub == "scale":
                obj = cluster.scale_of(res, obj)
            elif sub == "log":
                return self.send_raw(200, cluster.pod_log(obj, query), "text/plain")
            elif sub == "status":
                pass
            return self.send_object(res, obj, accept, query, sub)
        if verb == "create":
            if ns is not None and res.namespaced is False:
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            if res.namespaced and ns is None:
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            obj = decode()
            check_microtimes(res.kind, version, obj)
            check_fields(obj, res.kind, True)
            obj = cluster.create(res, ns, obj, dry_run)
            return self.send_json(201, obj)
        if verb == "update":
            obj = decode()
            if sub != "scale":
                check_microtimes(res.kind, version, obj)
            check_fields(obj, "Scale" if sub == "scale" else res.kind, True)
            return self.send_json(200, cluster.update(res, ns, name, obj, dry_run, sub))
        if verb == "patch":
            if ctype == "application/apply-patch+yaml":
                raise ApiError(415, 'the body of the request was in an unknown format - accepted media types '
                               'include: %s' % ", ".join(PATCH_TYPES), "UnsupportedMediaType", {})
            if ctype not in PATCH_TYPES:
                raise ApiError(415, 'the body of the request was in an unknown format - accepted media types '
                               'include: %s' % ", ".join(PATCH_TYPES), "UnsupportedMediaType", {})
            if ctype != "application/json-patch+json":
                try:
                    p = json.loads(body.decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    p = None
                if isinstance(p, dict):
                    check_fields(p, "Scale" if sub == "scale" else res.kind, False)
            return self.send_json(200, cluster.patch(res, ns, name, ctype, body, dry_run, sub))
        if verb == "delete":
            opts = {}
            if body:
                try:
                    opts = json.loads(body.decode("utf-8"))
                except ValueError:
                    raise ApiError(400, "error decoding DeleteOptions", "BadRequest")
                if "All" in (opts.get("dryRun") or []):
                    dry_run = True
            out = cluster.delete(res, ns, name, opts, dry_run)
            return self.send_json(200, out)
        if verb == "deletecollection":
            md, items = cluster.list(res, ns, dict(query, limit=""))
            for o in items:
                cluster.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], {}, dry_run)
            return self.send_listing(res, md, items, [], {})
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {})

    def serve_watch(self, res, ns, name, query):
        cluster, stopping = self.server.cfg.cluster, self.server.cfg.stopping
        if name is not None:
            query = dict(query)
            sel = "metadata.name=%s" % name
            query["fieldSelector"] = sel + ("," + query["fieldSelector"] if query.get("fieldSelector") else "")
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError(400, "invalid timeoutSeconds")
        deadline = time.time() + timeout
        matches, initial, last = cluster.watch_open(res, ns, query)
        self.resp_status, self.resp_ctype = 200, "application/json"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        self.write_log(self.user)  # log now: a watch may last long
        self.logged = True

        table_v = self.wants_table(parse_accept(self.headers.get("Accept")))
        sent = [0]

        def emit(etype, obj):
            if table_v and etype != "BOOKMARK":
                obj = self.make_table(res, [obj], obj["metadata"]["resourceVersion"], table_v,
                                      query.get("includeObject", "Metadata"))
                if sent[0]:
                    obj["columnDefinitions"] = []  # headers only with the first event (NoHeaders)
                sent[0] += 1
            data = (json.dumps({"type": etype, "object": obj}, separators=(",", ":")) + "\n").encode()
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
            self.wfile.flush()

        try:
            for o in initial:
                emit("ADDED", o)
            if query.get("sendInitialEvents") == "true" and query.get("allowWatchBookmarks") == "true":
                emit("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                  "metadata": {"resourceVersion": str(last),
                                               "annotations": {"k8s.io/initial-events-end": "true"}}})
            while not stopping.is_set():
                remaining = deadline - time.time()
                if remaining <= 0:
                    break
                if select.select([self.connection], [], [], 0)[0]:
                    self.close_connection = True  # the client closed (or sent something): end the watch
                    return
                for erv, etype, plural, obj in cluster.watch_wait(last, min(remaining, 0.5)):
                    last = erv
                    if plural == res.plural and matches(obj):
                        emit(etype, obj)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True

    def wants_table(self, accept):
        for mt, params in accept:
            if mt == "application/json" and params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
                return params.get("v", "v1")
            if mt in ("application/json", "*/*") and "as" not in params:
                return None
        return None

    def make_table(self, res, items, rv, version, include, cont=None):
        cols, cells = R.table_columns(res)
        rows = []
        for o in items:
            row = {"cells": cells(o)}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/" + version,
                                 "metadata": o["metadata"]}
            rows.append(row)
        md = {"resourceVersion": rv}
        if cont:
            md["continue"] = cont
        return {"kind": "Table", "apiVersion": "meta.k8s.io/" + version, "metadata": md,
                "columnDefinitions": cols, "rows": rows}

    def send_listing(self, res, md, items, accept, query):
        tv = self.wants_table(accept)
        if tv:
            for o in items:
                o.setdefault("kind", res.kind)
                o.setdefault("apiVersion", res.api_version)
            return self.send_json(200, self.make_table(res, items, md["resourceVersion"], tv,
                                                       query.get("includeObject", "Metadata"), md.get("continue")),
                                  "application/json;as=Table;v=%s;g=meta.k8s.io" % tv)
        for o in items:
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return self.send_json(200, {"kind": res.kind + "List", "apiVersion": res.api_version, "metadata": md,
                                    "items": items})

    def send_object(self, res, obj, accept, query, sub):
        tv = self.wants_table(accept)
        if tv and sub is None:
            return self.send_json(200, self.make_table(res, [obj], obj["metadata"]["resourceVersion"], tv,
                                                       query.get("includeObject", "Metadata")),
                                  "application/json;as=Table;v=%s;g=meta.k8s.io" % tv)
        return self.send_json(200, obj)

    def non_resource(self, segs, accept):
        port = self.server.server_address[1]
        if not segs:
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
            for g, v in R.group_versions():
                if g:
                    paths += ["/apis/" + g, "/apis/%s/%s" % (g, v)]
            return self.send_json(200, {"paths": sorted(set(paths))})
        head = segs[0]
        if head == "version" and len(segs) == 1:
            return self.send_json(200, SERVER_VERSION)
        if head in ("healthz", "livez", "readyz") and len(segs) == 1:
            return self.send_raw(200, b"ok", "text/plain; charset=utf-8")
        if head == "openapi" and len(segs) >= 2 and segs[1] == "v3":
            if len(segs) == 2:
                return self.send_json(200, schema.v3_index())
            for g, v in R.group_versions():
                if segs[2:] == (["apis", g, v] if g else ["api", v]):
                    return self.send_json(200, schema.gv_document(g, v))
        if head == "openapi":
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if head in ("api", "apis") and len(segs) == 1:
            for mt, params in accept:
                if mt == "application/json" and params.get("g") == "apidiscovery.k8s.io" and \
                        params.get("as") == "APIGroupDiscoveryList" and params.get("v") in ("v2", "v2beta1"):
                    v = params["v"]
                    return self.send_json(200, aggregated(head == "api", v),
                                          "application/json;g=apidiscovery.k8s.io;v=%s;as=APIGroupDiscoveryList" % v)
                if mt in ("application/json", "*/*") and "as" not in params:
                    break
            if head == "api":
                return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                            "serverAddress": "127.0.0.1:%d" % port}]})
            groups = [api_group(g) for g, _ in R.group_versions() if g]
            uniq = []
            for gr in groups:
                if gr["name"] not in [u["name"] for u in uniq]:
                    uniq.append(gr)
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": uniq})
        if head == "api" and len(segs) == 2 and segs[1] == "v1":
            return self.send_json(200, self.resource_list("", "v1"))
        if head == "apis" and len(segs) == 2:
            if not any(g == segs[1] for g, _ in R.group_versions()) or segs[1] == "":
                raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
            return self.send_json(200, dict(kind="APIGroup", apiVersion="v1", **api_group(segs[1])))
        if head == "apis" and len(segs) == 3 and (segs[1], segs[2]) in R.group_versions() and segs[1]:
            return self.send_json(200, self.resource_list(segs[1], segs[2]))
        raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

    def resource_list(self, group, version):
        res = [e for r in R.RESOURCES if r.group == group and r.version == version for e in resource_entry(r, True)]
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "%s/%s" % (group, version) if group else version, "resources": res}


class Config:
    pass


def main(argv=None):
    ap = argparse.ArgumentParser(description="Kubernetes API stand-in for rbl tests")
    ap.add_argument("--fixtures", action="append", required=True, help="YAML file or directory (repeatable)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca")
    ap.add_argument("--token", action="append", default=[], help="TOKEN=USER[:GROUP1,GROUP2]")
    ap.add_argument("--anonymous", help="user name given to requests without credentials")
    ap.add_argument("--log")
    ap.add_argument("--fail", action="append", default=[], help="'METHOD PATH_REGEX STATUS [COUNT]'")
    ap.add_argument("--delay-ms", action="append", default=[], help="[METHOD ]PATH_REGEX:MS (before the request is applied)")
    ap.add_argument("--answer-delay-ms", action="append", default=[],
                    help="[METHOD ]PATH_REGEX:MS[,COUNT] (after the request is applied, before the answer)")
    ap.add_argument("--authorization-mode", choices=["AlwaysAllow", "RBAC"], default="AlwaysAllow",
                    help="RBAC enforces the stored Roles/Bindings on every request")
    ap.add_argument("--no-controllers", action="store_true",
                    help="do not simulate controllers (Deployment status follows spec by default)")
    ap.add_argument("--rollout-ms", type=int, default=0,
                    help="a Deployment's new template rolls out one replica per MS milliseconds (default: at once)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)

    cfg = Config()
    cfg.verbose = a.verbose
    cfg.rbac = a.authorization_mode == "RBAC"
    cfg.cluster = Cluster(controllers=not a.no_controllers, rollout_ms=a.rollout_ms)
    cfg.cluster.load_fixtures(a.fixtures)
    cfg.tokens = {}
    for t in a.token:
        tok, sep, who = t.partition("=")
        if not sep or not tok or not who:
            raise SystemExit("--token wants TOKEN=USER[:GROUP1,GROUP2], got %r" % t)
        user, _, gs = who.partition(":")
        cfg.tokens[tok] = (user, [g for g in gs.split(",") if g])
    cfg.anonymous = a.anonymous
    cfg.client_ca = a.client_ca
    cfg.faults = [Fault(f) for f in a.fail]
    cfg.fault_lock = threading.Lock()
    def parse_delay(opt, d):
        rx, sep, ms = d.rpartition(":")
        ms, comma, count = ms.partition(",")
        if not sep or not ms.isdigit() or (comma and (opt == "--delay-ms" or not count.isdigit())):
            raise SystemExit("%s wants [METHOD ]PATH_REGEX:MS%s, got %r" % (opt, "" if opt == "--delay-ms" else "[,COUNT]", d))
        meth = None
        m = re.match(r"^([A-Z]+) (.*)$", rx)
        if m:
            meth, rx = m.group(1), m.group(2)
        return [meth, re.compile(rx), int(ms), int(count) if comma else None]
    cfg.delays = [parse_delay("--delay-ms", d) for d in a.delay_ms]
    cfg.answer_delays = [parse_delay("--answer-delay-ms", d) for d in a.answer_delay_ms]
    cfg.log = open(a.log, "a") if a.log else None
    cfg.log_lock = threading.Lock()
    cfg.stopping = threading.Event()
    cfg.ssl_ctx = None
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key or a.tls_cert)
        ctx.set_alpn_protocols(["http/1.1"])
        if a.client_ca:
            ctx.load_verify_locations(a.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        cfg.ssl_ctx = ctx
    elif a.client_ca:
        raise SystemExit("--client-ca needs --tls-cert")

    srv = Server(("127.0.0.1", a.port), Handler, cfg)
    port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write("%d\n" % port)
        os.replace(tmp, a.port_file)
    sys.stderr.write("kube-standin listening on %s://127.0.0.1:%d\n" % ("https" if cfg.ssl_ctx else "http", port))
    sys.stderr.flush()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        cfg.stopping.set()
        srv.server_close()


if __name__ == "__main__":
    main()
