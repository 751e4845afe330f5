"""A Kubernetes API emulator for the sandbox: object store, HTTP API server and launcher.

What is served: discovery (legacy documents, and aggregated discovery v2 on ``/api`` and
``/apis`` when asked; OpenAPI v2 answers 404; OpenAPI v3 documents carry only the PATCH
operations, enough for kubectl to trust ``fieldValidation`` instead of validating schemas
itself), namespaces, pods, services, endpoints, secrets, configmaps, events, serviceaccounts,
one node (core/v1), deployments, replicasets (apps/v1), leases (coordination.k8s.io/v1), roles,
rolebindings, clusterroles, clusterrolebindings (rbac.authorization.k8s.io/v1: stored, not
enforced) and customresourcedefinitions (apiextensions.k8s.io/v1), whose resources are
registered at run time (``customresources.py``; Istio's VirtualService and DestinationRule are
installed at start from ``crds/``), with get, list (label and field selectors), watch, create,
replace, strategic-merge (not on custom resources: 415) / JSON-merge / JSON patch, an
approximate server-side apply (create, else merge), delete with ownerReferences cascade,
``dryRun=All``, the ``status``, ``scale`` and ``pods/log`` subresources, and server-side
Tables for kubectl.

Limits, honestly: one process, state in memory (lost on restart); deletion is immediate (no
finalizers or graceful ``deletionTimestamp``); no admission, RBAC enforcement, quotas, field
managers, pagination (``limit`` is ignored), CRD schema validation or conversion, deep
unknown-field detection (``fieldValidation=Strict`` checks the top level and metadata only), or
protobuf beyond the fields that ``kubectl create ...`` and ``kubectl expose`` send (see
``protobuf.py``); ``logs -f`` returns what exists and ends.

The same port speaks plain HTTP (``K8sServer.url``) and TLS with a self-signed certificate
(the kubeconfig's ``https://`` server, CA embedded): kubectl only sends bearer tokens over TLS.
"""
