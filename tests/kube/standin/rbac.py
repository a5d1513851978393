"""RBAC authorizer over the objects in the store (rbac.authorization.k8s.io/v1)."""


def _subject_matches(subj, user, groups, binding_ns):
    kind = subj.get("kind")
    name = subj.get("name")
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        ns = subj.get("namespace") or binding_ns
        return user == "system:serviceaccount:%s:%s" % (ns, name)
    return False


def _match_list(values, want):
    return "*" in values or want in values


def _rule_allows(rule, attrs):
    if not _match_list(rule.get("verbs") or [], attrs["verb"]):
        return False
    if attrs.get("nonResource"):
        for u in rule.get("nonResourceURLs") or []:
            if u == "*" or u == attrs["path"] or (u.endswith("*") and attrs["path"].startswith(u[:-1])):
                return True
        return False
    if rule.get("nonResourceURLs") and not rule.get("resources"):
        return False
    if not _match_list(rule.get("apiGroups") or [], attrs.get("group", "")):
        return False
    res = attrs.get("resource", "")
    sub = attrs.get("subresource", "")
    combined = res + "/" + sub if sub else res
    ok = False
    for r in rule.get("resources") or []:
        if r == "*" or r == combined or (sub and r == "*/" + sub):
            ok = True
            break
    if not ok:
        return False
    names = rule.get("resourceNames") or []
    if names:
        return attrs.get("name", "") in names and attrs.get("name", "") != ""
    return True


class Authorizer:
    def __init__(self, store):
        self.store = store  # must offer list_raw(plural, namespace=None) -> [obj]

    def _role_rules(self, ref, ns):
        kind, name = ref.get("kind"), ref.get("name")
        if kind == "ClusterRole":
            role = self.store.get_raw("clusterroles", None, name)
            if role is None:
                return []
            rules = list(role.get("rules") or [])
            agg = role.get("aggregationRule")
            if agg:
                from labelsel import label_match
                for sel in agg.get("clusterRoleSelectors") or []:
                    reqs = [(k, "=", v) for k, v in (sel.get("matchLabels") or {}).items()]
                    for cr in self.store.list_raw("clusterroles"):
                        if cr is not role and label_match(reqs, cr["metadata"].get("labels")):
                            rules.extend(cr.get("rules") or [])
            return rules
        if kind == "Role" and ns:
            role = self.store.get_raw("roles", ns, name)
            return list(role.get("rules") or []) if role else []
        return []

    def rules_for(self, user, groups, ns):
        """All rules that apply to the user in namespace ns (SelfSubjectRulesReview)."""
        with self.store.lock:
            return self._rules_for(user, groups, ns)

    def _rules_for(self, user, groups, ns):
        rules = []
        for crb in self.store.list_raw("clusterrolebindings"):
            if any(_subject_matches(s, user, groups, None) for s in crb.get("subjects") or []):
                rules += self._role_rules(crb.get("roleRef") or {}, None)
        if ns:
            for rb in self.store.list_raw("rolebindings", ns):
                if any(_subject_matches(s, user, groups, ns) for s in rb.get("subjects") or []):
                    rules += self._role_rules(rb.get("roleRef") or {}, ns)
        res_rules, nonres_rules = [], []
        for r in rules:
            if r.get("nonResourceURLs"):
                nonres_rules.append({"verbs": r.get("verbs") or [], "nonResourceURLs": r["nonResourceURLs"]})
            if r.get("resources"):
                rr = {"verbs": r.get("verbs") or [], "apiGroups": r.get("apiGroups") or [],
                      "resources": r["resources"]}
                if r.get("resourceNames"):
                    rr["resourceNames"] = r["resourceNames"]
                res_rules.append(rr)
        return res_rules, nonres_rules

    def authorize(self, user, groups, attrs):
        """attrs: verb, group, resource, subresource, name, namespace | nonResource, path.
        Returns (allowed, reason)."""
        with self.store.lock:
            return self._authorize(user, groups, attrs)

    def _authorize(self, user, groups, attrs):
        if "system:masters" in groups:
            return True, ""
        for crb in self.store.list_raw("clusterrolebindings"):
            if any(_subject_matches(s, user, groups, None) for s in crb.get("subjects") or []):
                for rule in self._role_rules(crb.get("roleRef") or {}, None):
                    if _rule_allows(rule, attrs):
                        return True, 'RBAC: allowed by ClusterRoleBinding "%s" of ClusterRole "%s" to %s' % (
                            crb["metadata"]["name"], crb["roleRef"]["name"], _who(crb, user, groups))
        ns = attrs.get("namespace") or ""
        if ns and not attrs.get("nonResource"):
            for rb in self.store.list_raw("rolebindings", ns):
                if any(_subject_matches(s, user, groups, ns) for s in rb.get("subjects") or []):
                    for rule in self._role_rules(rb.get("roleRef") or {}, ns):
                        if _rule_allows(rule, attrs):
                            return True, 'RBAC: allowed by RoleBinding "%s/%s" of %s "%s" to %s' % (
                                rb["metadata"]["name"], ns, rb["roleRef"]["kind"], rb["roleRef"]["name"],
                                _who(rb, user, groups))
        return False, ""


def _who(binding, user, groups):
    for s in binding.get("subjects") or []:
        if s.get("kind") == "User" and s.get("name") == user:
            return 'User "%s"' % user
        if s.get("kind") == "Group" and s.get("name") in groups:
            return 'Group "%s"' % s["name"]
        if s.get("kind") == "ServiceAccount":
            return 'ServiceAccount "%s/%s"' % (s.get("namespace", ""), s.get("name"))
    return 'User "%s"' % user
