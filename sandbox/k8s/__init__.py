"""A Kubernetes API emulator for the sandbox: object store, HTTP API server and launcher.

What is served: discovery (legacy form: aggregated discovery and OpenAPI v2 answer 404;
OpenAPI v3 documents carry only the PATCH operations, enough for kubectl to trust
``fieldValidation`` instead of validating schemas itself), namespaces, pods, services,
endpoints, secrets, configmaps, events, one node (core/v1), deployments, replicasets
(apps/v1) and leases (coordination.k8s.io/v1) with get, list (label and field selectors),
watch, create, replace, strategic-merge / JSON-merge / JSON patch, an approximate
server-side apply (create, else strategic merge), delete with ownerReferences cascade,
``dryRun=All``, the ``status``, ``scale`` and ``pods/log`` subresources, and server-side
Tables for kubectl.

Limits, honestly: one process, state in memory (lost on restart); deletion is immediate (no
finalizers or graceful ``deletionTimestamp``); no admission, RBAC, quotas, field managers,
pagination (``limit`` is ignored), deep unknown-field detection (``fieldValidation=Strict``
checks the top level and metadata only), or protobuf beyond the Namespace, Secret,
ConfigMap, Deployment and Service fields that ``kubectl create ...`` and ``kubectl expose``
send; ``logs -f`` returns what exists and ends.

The same port speaks plain HTTP (``K8sServer.url``) and TLS with a self-signed certificate
(the kubeconfig's ``https://`` server, CA embedded): kubectl only sends bearer tokens over TLS.
"""
