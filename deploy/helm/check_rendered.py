"""Checks that a rendered earshot chart hangs together, then hands the rest to
kubernetes-validate.

kubernetes-validate checks each object against the Kubernetes schemas; it
cannot see that a Service selects no pod, that an Ingress names a port the
Service lacks, or that a pre-install hook needs an object Helm has not
created yet. This script checks those references across the objects of one
render, and separates the ServiceMonitors and KEDA's ScaledObjects and
TriggerAuthentications (CRDs kubernetes-validate has no schema for) after
checking them the same way.

Usage: python check_rendered.py RENDERED.yaml OUT.yaml
Writes the objects kubernetes-validate can check to OUT.yaml; prints one
line per problem and exits 1 if there is any.
"""

import sys

import yaml



# The database URL variables, and each part's own (services' DatabaseSettings).
DATABASE_URLS = {"DATABASE_URL", "EARSHOT_LOADER_DATABASE_URL", "EARSHOT_API_DATABASE_URL", "EARSHOT_MIGRATE_DATABASE_URL"}
OWN_DATABASE_URL = {"loader": "EARSHOT_LOADER_DATABASE_URL", "api": "EARSHOT_API_DATABASE_URL"}


def pod_spec(obj):
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"], obj["spec"]["template"]["metadata"].get("labels", {})
    return None, None


def matches(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        val = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and val not in expr["values"]:
            return False
        if op == "NotIn" and val in expr["values"]:
            return False
        if op == "Exists" and val is None:
            return False
        if op == "DoesNotExist" and val is not None:
            return False
    return True


def main(rendered, out):
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def named(kind, name):
        return next((o for o in by_kind.get(kind, []) if o["metadata"]["name"] == name), None)

    workloads = []  # (obj, podspec, labels)
    for d in docs:
        spec, labels = pod_spec(d)
        if spec is not None:
            workloads.append((d, spec, labels))

    def pods_selected(selector, jobs=False):
        return [(w, s, l) for (w, s, l) in workloads if (jobs or w["kind"] != "Job") and matches(selector, l)]

    def port_names(spec):
        return {p.get("name") for c in spec["containers"] for p in c.get("ports", []) if p.get("name")}

    def where(o):
        return f'{o["kind"]}/{o["metadata"]["name"]}'

    for w, spec, labels in workloads:
        hook = (w["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        is_pre_hook = "pre-install" in hook
        for c in spec["containers"]:
            for ef in c.get("envFrom", []):
                cm = ef.get("configMapRef", {}).get("name")
                if cm:
                    if named("ConfigMap", cm) is None:
                        problems.append(f"{where(w)}: envFrom ConfigMap {cm} is not in the chart")
                    elif is_pre_hook:
                        problems.append(f"{where(w)}: pre-install hook uses ConfigMap {cm}, which Helm creates after the hook")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and is_pre_hook and named("ConfigMap", ref["name"]) is not None:
                    problems.append(f"{where(w)}: pre-install hook reads ConfigMap {ref['name']}, created after the hook")
            names = [e["name"] for e in c.get("env", [])]
            component = labels.get("app.kubernetes.io/component")
            urls = sorted(n for n in names if n in DATABASE_URLS)
            if component in OWN_DATABASE_URL and urls not in (["DATABASE_URL"], [OWN_DATABASE_URL[component]]):
                problems.append(f"{where(w)}: database URLs {urls}: a {component} pod gets exactly one, its own role's (or DATABASE_URL)")
            if component == "migrate" and "DATABASE_URL" not in urls:
                problems.append(f"{where(w)}: the migration Job lacks the owner's DATABASE_URL")
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                problems.append(f"{where(w)}: duplicate env {sorted(dupes)}")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in port_names(spec):
                    problems.append(f"{where(w)}: {probe} uses port {port}, which the container does not name")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"] for v in spec.get("volumes", [])}
            if mounts - vols:
                problems.append(f"{where(w)}: mounts undefined volumes {sorted(mounts - vols)}")
        sa = spec.get("serviceAccountName")
        if sa and is_pre_hook and named("ServiceAccount", sa) is not None:
            problems.append(f"{where(w)}: pre-install hook runs as ServiceAccount {sa}, which Helm creates after the hook")
        if w["kind"] != "Job" and not matches(w["spec"]["selector"], labels):
            problems.append(f"{where(w)}: selector does not match its own pod labels")

    for svc in by_kind.get("Service", []):
        sel = {"matchLabels": svc["spec"].get("selector", {})}
        pods = pods_selected(sel)
        if not pods:
            problems.append(f"{where(svc)}: selects no pod")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort")
            if isinstance(tp, str) and not any(tp in port_names(s) for (_, s, _) in pods):
                problems.append(f"{where(svc)}: targetPort {tp} is not a container port of the selected pods")

    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                svc = named("Service", b["name"])
                if svc is None:
                    problems.append(f"{where(ing)}: backend Service {b['name']} is not in the chart")
                elif b["port"].get("name") and b["port"]["name"] not in {p.get("name") for p in svc["spec"]["ports"]}:
                    problems.append(f"{where(ing)}: Service {b['name']} has no port {b['port']['name']}")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        t = hpa["spec"]["scaleTargetRef"]
        target = named(t["kind"], t["name"])
        if target is None:
            problems.append(f"{where(hpa)}: scale target {t['kind']}/{t['name']} is not in the chart")
        elif "replicas" in target["spec"]:
            problems.append(f"{where(hpa)}: {t['name']} also sets spec.replicas, which fights the autoscaler on every upgrade")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not pods_selected(pdb["spec"]["selector"]):
            problems.append(f"{where(pdb)}: selects no pod")

    for np in by_kind.get("NetworkPolicy", []):
        pods = pods_selected(np["spec"]["podSelector"], jobs=True)
        if not pods:
            problems.append(f"{where(np)}: selects no pod")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str) and not any(p["port"] in port_names(s) for (_, s, _) in pods):
                    problems.append(f"{where(np)}: port {p['port']} is not named by any selected pod")

    for sm in by_kind.get("ServiceMonitor", []):
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            problems.append(f"{where(sm)}: apiVersion {sm['apiVersion']}, expected monitoring.coreos.com/v1")
        svcs = [s for s in by_kind.get("Service", []) if matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        if not svcs:
            problems.append(f"{where(sm)}: selects no Service")
        for ep in sm["spec"].get("endpoints", []):
            if not any(ep.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in svcs):
                problems.append(f"{where(sm)}: endpoint port {ep.get('port')} is not a port of the selected Services")

    for so in by_kind.get("ScaledObject", []):
        if so["apiVersion"] != "keda.sh/v1alpha1":
            problems.append(f"{where(so)}: apiVersion {so['apiVersion']}, expected keda.sh/v1alpha1")
        t = so["spec"]["scaleTargetRef"]
        target = named(t.get("kind", "Deployment"), t["name"])
        if target is None:
            problems.append(f"{where(so)}: scale target {t['name']} is not in the chart")
        elif "replicas" in target["spec"]:
            problems.append(f"{where(so)}: {t['name']} also sets spec.replicas, which fights KEDA on every upgrade")
        if not 0 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]:
            problems.append(f"{where(so)}: replica counts out of order")
        for trig in so["spec"]["triggers"]:
            ref = (trig.get("authenticationRef") or {}).get("name")
            if ref and named("TriggerAuthentication", ref) is None:
                problems.append(f"{where(so)}: authenticationRef {ref} is not in the chart")
            if trig["type"] == "aws-sqs-queue":
                md = trig["metadata"]
                for key in ("queueURL", "awsRegion", "queueLength"):
                    if not isinstance(md.get(key), str) or not md[key]:
                        problems.append(f"{where(so)}: aws-sqs-queue metadata {key} must be a non-empty string")
                if not str(md.get("queueLength", "")).isdigit():
                    problems.append(f"{where(so)}: queueLength {md.get('queueLength')!r} is not a whole number")
                if not str(md.get("queueURL", "")).startswith("https://sqs."):
                    problems.append(f"{where(so)}: queueURL {md.get('queueURL')!r} is not an SQS queue URL")
    for ta in by_kind.get("TriggerAuthentication", []):
        if ta["apiVersion"] != "keda.sh/v1alpha1":
            problems.append(f"{where(ta)}: apiVersion {ta['apiVersion']}, expected keda.sh/v1alpha1")
        pi = ta["spec"].get("podIdentity") or {}
        if pi.get("provider") != "aws" or pi.get("identityOwner") not in ("workload", "keda"):
            problems.append(f"{where(ta)}: podIdentity must be provider aws with identityOwner workload or keda")

    crds = ("ServiceMonitor", "ScaledObject", "TriggerAuthentication")
    kept = [d for d in docs if d["kind"] not in crds]
    with open(out, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    skipped = len(docs) - len(kept)
    for p in problems:
        print(f"  {rendered}: {p}")
    print(f"  {len(docs)} objects cross-checked; {skipped} ServiceMonitor, ScaledObject and TriggerAuthentication object(s) checked here only (no schema in kubernetes-validate)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
