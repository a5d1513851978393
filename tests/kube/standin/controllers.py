"""Stand-in controllers: the deployment controller (ReplicaSets, revisions, rollout progress),
the ReplicaSet controller's replacement of a deleted pod, and the Events they record.

Every function here runs with the store's lock held (the Cluster calls them from its writes, the
rollout ticker takes the lock itself)."""
import copy
import hashlib
import json
import random
import threading
import time
import uuid

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
STALL = "standin.rbl.io/stall-rollout"  # on a Deployment: its rollouts never progress
ALPHA = "bcdfghjklmnpqrstvwxz2456789"


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def template_hash(tmpl):
    h = hashlib.sha256(json.dumps(without_hash(tmpl), sort_keys=True).encode()).digest()
    return "".join(ALPHA[b % len(ALPHA)] for b in h[:10])


def without_hash(tmpl):
    t = copy.deepcopy(tmpl or {})
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def owned_by(obj, uid):
    return any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


def revision_of(obj):
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


class Controllers:
    def __init__(self, store, rollout_ms=0):
        self.store = store
        self.rollout_ms = rollout_ms
        self.pending = {}  # (ns, name) -> {"started": time, "step": int}
        if rollout_ms > 0:
            t = threading.Thread(target=self._ticker, daemon=True)
            t.start()

    # ------------------------------------------------------------ events
    def event(self, ns, involved, reason, message, etype="Normal", component="deployment-controller"):
        md = involved["metadata"]
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": "%s.%016x" % (md["name"], random.getrandbits(64)), "namespace": ns,
                           "uid": str(uuid.uuid4()), "creationTimestamp": now()},
              "involvedObject": {"kind": involved["kind"], "namespace": ns, "name": md["name"], "uid": md["uid"],
                                 "apiVersion": involved["apiVersion"],
                                 "resourceVersion": md.get("resourceVersion", "")},
              "reason": reason, "message": message, "type": etype, "count": 1,
              "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": component},
              "reportingComponent": component, "reportingInstance": ""}
        ev["metadata"]["resourceVersion"] = self.store.next_rv()
        self.store.put("events", ns, ev["metadata"]["name"], ev)

    def _put(self, plural, ns, obj):
        obj["metadata"]["resourceVersion"] = self.store.next_rv()
        self.store.put(plural, ns, obj["metadata"]["name"], obj)

    # ------------------------------------------------------ deployments
    def sync_deployment(self, dep, old=None, fixture=False):
        """dep is about to be stored: find or make its ReplicaSet, set the revision annotation and the
        status (at once, or by the ticker when rollouts take time). Writes ReplicaSets and Events."""
        md, ns = dep["metadata"], dep["metadata"]["namespace"]
        tmpl = (dep.get("spec") or {}).get("template") or {}
        n = (dep.get("spec") or {}).get("replicas", 1)
        rss = [o for o in self.store.list_raw("replicasets", ns) if owned_by(o, md["uid"])]
        current = next((r for r in rss if without_hash(r["spec"]["template"]) == without_hash(tmpl)), None)
        maxrev = max([revision_of(r) for r in rss] or [0])
        template_changed = current is None or revision_of(current) < maxrev
        if current is None:
            h = template_hash(tmpl)
            rt = copy.deepcopy(tmpl)
            rt.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
            sel = copy.deepcopy((dep.get("spec") or {}).get("selector") or {})
            sel.setdefault("matchLabels", {})[HASH_LABEL] = h
            current = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "metadata": {"name": "%s-%s" % (md["name"], h), "namespace": ns, "uid": str(uuid.uuid4()),
                                    "creationTimestamp": now(), "generation": 1,
                                    "labels": dict(rt["metadata"]["labels"]),
                                    "annotations": {REVISION: str(maxrev + 1)},
                                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                         "name": md["name"], "uid": md["uid"], "controller": True,
                                                         "blockOwnerDeletion": True}]},
                       "spec": {"replicas": 0, "selector": sel, "template": rt}, "status": {"replicas": 0}}
        elif revision_of(current) < maxrev:  # back to an older template: that ReplicaSet is the newest revision
            current = copy.deepcopy(current)
            current["metadata"]["annotations"][REVISION] = str(maxrev + 1)
        md.setdefault("annotations", {})[REVISION] = current["metadata"]["annotations"][REVISION]
        if fixture and dep.get("status"):
            self._scale_rs(ns, dep, current, rss, n, n)
            return
        key = (ns, md["name"])
        if not template_changed and key in self.pending:
            return  # a rollout in progress goes on; the ticker owns the status
        progress = self.rollout_ms > 0 and template_changed and old is not None
        if progress:
            self._scale_rs(ns, dep, current, rss, n, 0)
            st = copy.deepcopy((old or {}).get("status") or {})
            dep["status"] = st  # the old status until the ticker observes the new generation
            self.pending[key] = {"started": time.time(), "step": 0}
        else:
            self._scale_rs(ns, dep, current, rss, n, n)
            self.pending.pop(key, None)
            set_status(dep, n, n, n, n, "NewReplicaSetAvailable",
                       'ReplicaSet "%s" has successfully progressed.' % current["metadata"]["name"])

    def _scale_rs(self, ns, dep, current, rss, n, ready):
        for r in rss:
            if r["metadata"]["uid"] != current["metadata"]["uid"] and r["spec"].get("replicas", 0) != 0:
                was = r["spec"]["replicas"]
                r = copy.deepcopy(r)
                r["spec"]["replicas"] = 0
                r["status"] = rs_status(0, 0, r["metadata"].get("generation", 1))
                self._put("replicasets", ns, r)
                self.event(ns, dep, "ScalingReplicaSet", "Scaled down replica set %s from %d to 0"
                           % (r["metadata"]["name"], was))
        stored = self.store.get_raw("replicasets", ns, current["metadata"]["name"])
        want = copy.deepcopy(current)
        want["spec"]["replicas"] = n
        want["status"] = rs_status(n, ready, want["metadata"].get("generation", 1))
        if stored is None or strip_rv(stored) != strip_rv(want):
            scaled_up = (stored or {}).get("spec", {}).get("replicas", 0) < n
            self._put("replicasets", ns, want)
            if scaled_up:
                self.event(ns, dep, "ScalingReplicaSet", "Scaled up replica set %s to %d"
                           % (want["metadata"]["name"], n))

    def _ticker(self):
        while True:
            time.sleep(self.rollout_ms / 1000.0)
            with self.store.lock:
                for key in list(self.pending):
                    self._advance(key)

    def _advance(self, key):
        ns, name = key
        p = self.pending[key]
        dep = self.store.get_raw("deployments", ns, name)
        if dep is None:
            del self.pending[key]
            return
        dep = copy.deepcopy(dep)
        spec, md = dep.get("spec") or {}, dep["metadata"]
        n = spec.get("replicas", 1)
        rs_name = "%s-%s" % (name, template_hash(spec.get("template")))
        rs = self.store.get_raw("replicasets", ns, rs_name)
        gen = md.get("generation", 1)
        if (md.get("annotations") or {}).get(STALL) == "true":
            deadline = spec.get("progressDeadlineSeconds", 600)
            if time.time() - p["started"] < deadline:
                if p["step"] == 0:
                    p["step"] = 1
                    set_status(dep, n + 1, 0, n, n, "ReplicaSetUpdated", 'ReplicaSet "%s" is progressing.' % rs_name,
                               progressing="True")
                    self._put("deployments", ns, dep)
                return
            set_status(dep, n + 1, 0, n, n, "ProgressDeadlineExceeded",
                       'ReplicaSet "%s" has timed out progressing.' % rs_name, progressing="False")
            self._put("deployments", ns, dep)
            del self.pending[key]
            return
        p["step"] += 1
        k = p["step"]
        # step 1: the new generation observed, nothing updated; steps 2..n+1: one more replica updated;
        # then the old ones terminate; then the new ones become available
        updated = min(max(k - 1, 0), n)
        if k <= n + 1:
            set_status(dep, n + (1 if updated < n else 0) if n else 0, updated, max(n - 1, updated), max(n - 1, 0),
                       "ReplicaSetUpdated", 'ReplicaSet "%s" is progressing.' % rs_name, progressing="True")
            dep["status"]["observedGeneration"] = gen
        elif k == n + 2:
            set_status(dep, n, n, n, max(n - 1, 0), "ReplicaSetUpdated", 'ReplicaSet "%s" is progressing.' % rs_name,
                       progressing="True")
        else:
            set_status(dep, n, n, n, n, "NewReplicaSetAvailable",
                       'ReplicaSet "%s" has successfully progressed.' % rs_name)
            if rs is not None:
                rs = copy.deepcopy(rs)
                rs["status"] = rs_status(n, n, rs["metadata"].get("generation", 1))
                self._put("replicasets", ns, rs)
            del self.pending[key]
        self._put("deployments", ns, dep)

    # --------------------------------------------------------------- pods
    def pod_deleted(self, ns, pod):
        """The kubelet's Killing event; a pod a Deployment selects is replaced (its ReplicaSet's job)."""
        for c in (pod.get("spec") or {}).get("containers") or []:
            self.event(ns, pod, "Killing", "Stopping container %s" % c.get("name"), component="kubelet")
        labels = pod["metadata"].get("labels") or {}
        for dep in self.store.list_raw("deployments", ns):
            sel = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                continue
            h = template_hash((dep.get("spec") or {}).get("template"))
            rs = self.store.get_raw("replicasets", ns, "%s-%s" % (dep["metadata"]["name"], h))
            new = copy.deepcopy(pod)
            nmd = new["metadata"]
            base = "%s-%s-" % (dep["metadata"]["name"], h)
            nmd["name"] = base + "".join(random.choice(ALPHA) for _ in range(5))
            nmd["generateName"] = base
            nmd["uid"] = str(uuid.uuid4())
            nmd["creationTimestamp"] = now()
            nmd.setdefault("labels", {})[HASH_LABEL] = h
            for k in ("deletionTimestamp", "annotations"):
                nmd.pop(k, None)
            if rs is not None:
                nmd["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
                                           "uid": rs["metadata"]["uid"], "controller": True,
                                           "blockOwnerDeletion": True}]
            new["status"] = {"phase": "Running", "startTime": now(),
                             "containerStatuses": [{"name": c.get("name"), "ready": True, "restartCount": 0,
                                                    "image": c.get("image"), "started": True,
                                                    "state": {"running": {"startedAt": now()}}}
                                                   for c in (new.get("spec") or {}).get("containers") or []]}
            self._put("pods", ns, new)
            if rs is not None:
                self.event(ns, rs, "SuccessfulCreate", "Created pod: %s" % nmd["name"],
                           component="replicaset-controller")
            return new
        return None


def strip_rv(o):
    o = copy.deepcopy(o)
    o["metadata"].pop("resourceVersion", None)
    return o


def rs_status(n, ready, gen):
    st = {"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": ready, "availableReplicas": ready,
          "observedGeneration": gen}
    if n == 0:
        st = {"replicas": 0, "observedGeneration": gen}
    return st


def set_status(dep, replicas, updated, ready, available, reason, message, progressing="True"):
    st = dep.setdefault("status", {})
    st["observedGeneration"] = dep["metadata"].get("generation", 1)
    for k, v in (("replicas", replicas), ("updatedReplicas", updated), ("readyReplicas", ready),
                 ("availableReplicas", available)):
        if v:
            st[k] = v
        else:
            st.pop(k, None)
    unavailable = max(replicas - available, 0)
    if unavailable:
        st["unavailableReplicas"] = unavailable
    else:
        st.pop("unavailableReplicas", None)
    n = (dep.get("spec") or {}).get("replicas", 1)
    avail = "True" if available >= max(n - 1, 0) else "False"
    st["conditions"] = [
        {"type": "Available", "status": avail,
         "reason": "MinimumReplicasAvailable" if avail == "True" else "MinimumReplicasUnavailable",
         "message": "Deployment has minimum availability." if avail == "True"
         else "Deployment does not have minimum availability.",
         "lastUpdateTime": now(), "lastTransitionTime": now()},
        {"type": "Progressing", "status": progressing, "reason": reason, "message": message,
         "lastUpdateTime": now(), "lastTransitionTime": now()},
    ]
