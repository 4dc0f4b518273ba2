{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "tokenplace-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name already
contains it; truncated to 63 characters.
*/}}
{{- define "tokenplace-relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "tokenplace-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The image tag actually deployed (value, else the chart's appVersion).
*/}}
{{- define "tokenplace-relay.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Common labels on every object.
*/}}
{{- define "tokenplace-relay.labels" -}}
helm.sh/chart: {{ include "tokenplace-relay.chart" . }}
{{ include "tokenplace-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ include "tokenplace-relay.imageTag" . | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: token.place
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: name and instance only (immutable in a Deployment selector).
*/}}
{{- define "tokenplace-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenplace-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the helm test pod: deliberately NOT the selector labels, so the relay Service never
routes to it and the relay's NetworkPolicy can name it.
*/}}
{{- define "tokenplace-relay.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "tokenplace-relay.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "tokenplace-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenplace-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag. `latest` is refused.
*/}}
{{- define "tokenplace-relay.image" -}}
{{- $tag := include "tokenplace-relay.imageTag" . }}
{{- if eq (lower $tag) "latest" }}
{{- fail "image.tag: `latest` is refused; pin an immutable `sha-<shortsha>` tag, a semver release, or image.digest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the server token(s), or "" when registration is open.
*/}}
{{- define "tokenplace-relay.secretName" -}}
{{- if .Values.relay.serverToken.existingSecret }}
{{- .Values.relay.serverToken.existingSecret }}
{{- else if .Values.relay.serverToken.value }}
{{- include "tokenplace-relay.fullname" . }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the operator token(s), or "" when the operator route is off.
*/}}
{{- define "tokenplace-relay.operatorSecretName" -}}
{{- if .Values.relay.operatorToken.existingSecret }}
{{- .Values.relay.operatorToken.existingSecret }}
{{- else if .Values.relay.operatorToken.value }}
{{- include "tokenplace-relay.fullname" . }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the metrics token (TOKENPLACE_METRICS_TOKEN), or "" when /metrics and
/relay/diagnostics are open.
*/}}
{{- define "tokenplace-relay.metricsSecretName" -}}
{{- if .Values.relay.metricsToken.existingSecret }}
{{- .Values.relay.metricsToken.existingSecret }}
{{- else if .Values.relay.metricsToken.value }}
{{- include "tokenplace-relay.fullname" . }}
{{- end }}
{{- end }}

{{/*
Whether the chart renders its own Secret (a token or state.redis.url given as a value rather than
an existing Secret).
*/}}
{{- define "tokenplace-relay.chartSecret" -}}
{{- $t := .Values.relay.serverToken }}
{{- $o := .Values.relay.operatorToken }}
{{- $m := .Values.relay.metricsToken }}
{{- if or (and $t.value (not $t.existingSecret)) (and $o.value (not $o.existingSecret)) (and $m.value (not $m.existingSecret)) (include "tokenplace-relay.chartRedisUrl" .) }}true{{ end }}
{{- end }}

{{/*
The private operator endpoints (spec §6.11): never routed by the Ingress unless
ingress.exposeOperatorRoutes.
*/}}
{{- define "tokenplace-relay.operatorRoutes" -}}
{{- toJson (list "/metrics" "/relay/diagnostics") }}
{{- end }}

{{/*
The relay's public paths, for an Ingress host without `paths` (JSON list of {path, pathType}):
`/api` (API v1 relay, release metadata, proxied /api/...), the other proxy prefixes and the chat
page's hashed `/assets` as Prefix, then every fixed public route as Exact: the chat page `/` and
its `/relay/status`, probes, the node-side /unregister alias, the streamed legacy routes (always
served), the legacy broker (410 while relay.legacyRoutes=false, as upstream) and upstream's
fail-closed plaintext paths (503). An allowlist: a route the relay gains
later stays private until it is added here (test/chart/operator-endpoints.test.ts checks this list against
the relay's route tables).
*/}}
{{- define "tokenplace-relay.ingressPublicPaths" -}}
{{- $paths := list (dict "path" "/api" "pathType" "Prefix") (dict "path" "/assets" "pathType" "Prefix") }}
{{- $seen := list "/api" "/assets" }}
{{- if not .Values.relay.relayOnly }}
{{- range (default (list "/api/" "/v1/") .Values.relay.proxy.prefixes) }}
{{- $p := trimSuffix "/" . }}
{{- if not (or (has $p $seen) (hasPrefix "/api/" $p)) }}
{{- $paths = append $paths (dict "path" $p "pathType" "Prefix") }}
{{- $seen = append $seen $p }}
{{- end }}
{{- end }}
{{- end }}
{{- range list "/" "/relay/status" "/livez" "/healthz" "/unregister" "/stream/source" "/stream/retrieve" "/next_server" "/faucet" "/sink" "/source" "/retrieve" "/relay/api/v1/chat/completions" "/relay/api/v1/source" }}
{{- $paths = append $paths (dict "path" . "pathType" "Exact") }}
{{- end }}
{{- toJson $paths }}
{{- end }}

{{/*
The paths an Ingress host routes (JSON list): its own `paths`, else `/` with
ingress.exposeOperatorRoutes, else the public paths. Argument: (list $root $host).
*/}}
{{- define "tokenplace-relay.ingressHostPaths" -}}
{{- $root := index . 0 }}
{{- $host := index . 1 }}
{{- if $host.paths }}
{{- toJson $host.paths }}
{{- else if $root.Values.ingress.exposeOperatorRoutes }}
{{- toJson (list (dict "path" "/" "pathType" "Prefix")) }}
{{- else }}
{{- include "tokenplace-relay.ingressPublicPaths" $root }}
{{- end }}
{{- end }}

{{/*
An environment value from a number: whole numbers as integers (never 1e+06), fractions as plain
decimals. Argument: (list ENV_NAME number).
*/}}
{{- define "tokenplace-relay.envNumber" -}}
{{- $name := index . 0 }}
{{- $n := index . 1 }}
{{- if eq (float64 $n) (float64 (int64 $n)) }}
{{- int64 $n }}
{{- else }}
{{- $s := toString $n }}
{{- if contains "e" $s }}
{{- fail (printf "%s: %s would render in exponent notation, which the relay refuses; use a plain decimal (0.0001 or more)" $name $s) }}
{{- end }}
{{- $s }}
{{- end }}
{{- end }}

{{/*
Upstream: the host and port the relay connects to, and the full URL.
*/}}
{{- define "tokenplace-relay.upstreamHost" -}}
{{- default .Values.gpuExternalName.name .Values.upstream.host }}
{{- end }}

{{- define "tokenplace-relay.upstreamPort" -}}
{{- if .Values.upstream.port }}{{ .Values.upstream.port | int }}{{ else }}{{ .Values.gpuExternalName.port | int }}{{ end }}
{{- end }}

{{- define "tokenplace-relay.upstreamUrl" -}}
{{- if .Values.upstream.url }}
{{- .Values.upstream.url }}
{{- else }}
{{- printf "%s://%s:%s" .Values.upstream.scheme (include "tokenplace-relay.upstreamHost" .) (include "tokenplace-relay.upstreamPort" .) }}
{{- end }}
{{- end }}

{{/*
Whether the GPU indirection Service (ExternalName or headless) is rendered.
*/}}
{{- define "tokenplace-relay.gpuServiceEnabled" -}}
{{- if and .Values.gpuExternalName.enabled (or .Values.gpuExternalName.host .Values.gpuExternalName.headless.enabled) }}true{{ end }}
{{- end }}

{{/*
CIDRs the relay may reach the GPU box at: networkPolicy.gpuServerCIDRs plus, in headless mode,
each pinned address as a host route.
*/}}
{{- define "tokenplace-relay.gpuCIDRs" -}}
{{- $cidrs := list }}
{{- range .Values.networkPolicy.gpuServerCIDRs }}{{ $cidrs = append $cidrs . }}{{ end }}
{{- if and .Values.gpuExternalName.enabled .Values.gpuExternalName.headless.enabled }}
{{- range .Values.gpuExternalName.headless.addresses }}
{{- $c := ternary (printf "%s/128" .) (printf "%s/32" .) (contains ":" .) }}
{{- if not (has $c $cidrs) }}{{ $cidrs = append $cidrs $c }}{{ end }}
{{- end }}
{{- end }}
{{- toJson $cidrs }}
{{- end }}

{{/*
Node affinity: the user's .Values.affinity.nodeAffinity AND (when arm64PageSize.enforce) "not
arm64, or labelled as a 4 KB-page node". nodeSelectorTerms are ORed and expressions inside a term
ANDed, so the page-size alternatives are distributed over every user term.
*/}}
{{- define "tokenplace-relay.affinity" -}}
{{- include "tokenplace-relay.affinityFor" (list . .Values.affinity) }}
{{- end }}

{{/*
The same for any pod of the chart. Argument: (list $root $affinityValue). The bundled Valkey needs
the rule as much as the relay: its jemalloc aborts on 16 KB/64 KB pages too.
*/}}
{{- define "tokenplace-relay.affinityFor" -}}
{{- $root := index . 0 }}
{{- $aff := deepCopy (default dict (index . 1)) }}
{{- if $root.Values.arm64PageSize.enforce }}
{{- $alts := list
      (dict "key" "kubernetes.io/arch" "operator" "NotIn" "values" (list "arm64"))
      (dict "key" $root.Values.arm64PageSize.nodeLabel "operator" "In" "values" (list $root.Values.arm64PageSize.nodeLabelValue)) }}
{{- $na := default dict (get $aff "nodeAffinity") }}
{{- $req := default dict (get $na "requiredDuringSchedulingIgnoredDuringExecution") }}
{{- $userTerms := default (list (dict)) (get $req "nodeSelectorTerms") }}
{{- $terms := list }}
{{- range $t := $userTerms }}
{{- range $alt := $alts }}
{{- $term := deepCopy $t }}
{{- $exprs := default list (get $term "matchExpressions") }}
{{- $_ := set $term "matchExpressions" (append $exprs $alt) }}
{{- $terms = append $terms $term }}
{{- end }}
{{- end }}
{{- $_ := set $req "nodeSelectorTerms" $terms }}
{{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $req }}
{{- $_ := set $aff "nodeAffinity" $na }}
{{- end }}
{{- if $aff }}
{{- toYaml $aff }}
{{- end }}
{{- end }}

{{/*
Pod-level and container-level security contexts shared by the relay and the test pod.
*/}}
{{- define "tokenplace-relay.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "tokenplace-relay.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
Shared state (state.backend=redis). The relay reads one complete URL (user, password and database
inside) from a Secret key: state.redis.existingSecret, the chart's own Secret (state.redis.url), or
the bundled Valkey's Secret (valkey.enabled). Never from the ConfigMap.
*/}}
{{- define "tokenplace-relay.redisUrlSecretName" -}}
{{- if eq .Values.state.backend "redis" }}
{{- if .Values.valkey.enabled }}
{{- include "tokenplace-relay.valkey.secretName" . }}
{{- else if .Values.state.redis.existingSecret }}
{{- .Values.state.redis.existingSecret }}
{{- else if .Values.state.redis.url }}
{{- include "tokenplace-relay.fullname" . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tokenplace-relay.redisUrlSecretKey" -}}
{{- if .Values.valkey.enabled }}
{{- if .Values.valkey.auth.existingSecret }}{{ .Values.valkey.auth.urlKey }}{{ else }}url{{ end }}
{{- else if .Values.state.redis.existingSecret }}
{{- .Values.state.redis.existingSecretKey }}
{{- else }}
{{- "redis-url" }}
{{- end }}
{{- end }}

{{/*
Key of the chart's own Secret that holds state.redis.url (only without existingSecret/valkey).
*/}}
{{- define "tokenplace-relay.chartRedisUrl" -}}
{{- $r := .Values.state.redis }}
{{- if and (eq .Values.state.backend "redis") $r.url (not $r.existingSecret) (not .Values.valkey.enabled) }}true{{ end }}
{{- end }}

{{/*
Several relay pods at once: a fixed replicaCount above 1, or an HPA.
*/}}
{{- define "tokenplace-relay.multiReplica" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
Deployment strategy. memory: Recreate (two pods must never serve from two private memories, not
even for the seconds of a rollout). redis: RollingUpdate, one extra pod, none taken away first
(state is shared, so old and new pods serve the same relay). An explicit .Values.strategy wins,
except RollingUpdate with memory state, which the validate rules refuse.
*/}}
{{- define "tokenplace-relay.strategy" -}}
{{- if .Values.strategy }}
{{- toYaml .Values.strategy }}
{{- else if eq .Values.state.backend "redis" }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- else }}
type: Recreate
{{- end }}
{{- end }}

{{/*
Whether the PodDisruptionBudget is rendered: podDisruptionBudget.enabled, or when it is null
(auto) with shared state and several replicas.
*/}}
{{- define "tokenplace-relay.pdbEnabled" -}}
{{- $e := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $e }}
{{- if and (eq .Values.state.backend "redis") (include "tokenplace-relay.multiReplica" .) }}true{{ end }}
{{- else if $e }}true{{ end }}
{{- end }}

{{/*
Bundled Valkey: names (the StatefulSet name stays <= 52 characters so the controller-revision-hash
label fits in 63), labels (a name of its own: the relay's Service, PDB and NetworkPolicy select
name+instance and must never pick up a Valkey pod), image.
*/}}
{{- define "tokenplace-relay.valkey.fullname" -}}
{{- printf "%s-valkey" (include "tokenplace-relay.fullname" . | trunc 45 | trimSuffix "-") }}
{{- end }}

{{- define "tokenplace-relay.valkey.headlessName" -}}
{{- printf "%s-headless" (include "tokenplace-relay.valkey.fullname" .) }}
{{- end }}

{{- define "tokenplace-relay.valkey.secretName" -}}
{{- default (include "tokenplace-relay.valkey.fullname" .) .Values.valkey.auth.existingSecret }}
{{- end }}

{{- define "tokenplace-relay.valkey.passwordKey" -}}
{{- if .Values.valkey.auth.existingSecret }}{{ .Values.valkey.auth.passwordKey }}{{ else }}password{{ end }}
{{- end }}

{{- define "tokenplace-relay.valkey.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-valkey" (include "tokenplace-relay.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The generated Valkey password: the one stored in the release's Secret (lookup, so upgrades keep
it), else 40 random characters. Computed once per render and cached in the values map, so the
Secret and the checksum annotations of the pods see the same password (a random value per include
would restart Valkey and the relays on the upgrade after the first install).
*/}}
{{- define "tokenplace-relay.valkey.generatedPassword" -}}
{{- $auth := .Values.valkey.auth }}
{{- if not (hasKey $auth "_generatedPassword") }}
{{- $password := "" }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tokenplace-relay.valkey.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "password") }}
{{- $password = index $existing.data "password" | b64dec }}
{{- end }}
{{- if not $password }}
{{- $password = randAlphaNum 40 }}
{{- end }}
{{- $_ := set $auth "_generatedPassword" $password }}
{{- end }}
{{- index $auth "_generatedPassword" }}
{{- end }}

{{/*
Labels of the Valkey objects themselves (the chart's common labels, component valkey).
*/}}
{{- define "tokenplace-relay.valkey.labels" -}}
{{ include "tokenplace-relay.labels" . }}
app.kubernetes.io/component: valkey
{{- end }}

{{/*
Labels of the Valkey pods: the common labels with the Valkey name instead of the relay's.
*/}}
{{- define "tokenplace-relay.valkey.podLabels" -}}
helm.sh/chart: {{ include "tokenplace-relay.chart" . }}
{{ include "tokenplace-relay.valkey.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.valkey.image.tag | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: token.place
app.kubernetes.io/component: valkey
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Valkey image: repository:tag@digest when a digest is set (the digest is what is pulled; the tag
stays for people reading the manifest), else repository:tag.
*/}}
{{- define "tokenplace-relay.valkey.image" -}}
{{- $i := .Values.valkey.image }}
{{- if eq (lower $i.tag) "latest" }}
{{- fail "valkey.image.tag: `latest` is refused; pin a version tag and valkey.image.digest" }}
{{- end }}
{{- if $i.digest }}
{{- printf "%s:%s@%s" $i.repository $i.tag $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $i.tag }}
{{- end }}
{{- end }}

{{/*
valkey.maxmemory (e.g. 256mb, 1gb) in bytes. Valkey's mb/gb are powers of 1024.
*/}}
{{- define "tokenplace-relay.valkey.maxmemoryBytes" -}}
{{- $m := lower .Values.valkey.maxmemory }}
{{- if hasSuffix "gb" $m }}
{{- mul (int64 (trimSuffix "gb" $m)) 1073741824 }}
{{- else }}
{{- mul (int64 (trimSuffix "mb" $m)) 1048576 }}
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity in bytes when it is written in Mi or Gi (else empty: not checked).
*/}}
{{- define "tokenplace-relay.miGiBytes" -}}
{{- $q := toString . }}
{{- if regexMatch "^[0-9]+Gi$" $q }}
{{- mul (int64 (trimSuffix "Gi" $q)) 1073741824 }}
{{- else if regexMatch "^[0-9]+Mi$" $q }}
{{- mul (int64 (trimSuffix "Mi" $q)) 1048576 }}
{{- end }}
{{- end }}

{{/*
Cross-field rules. Included from the Deployment so every render checks them.
*/}}
{{- define "tokenplace-relay.validate" -}}
{{- $v := .Values }}
{{- $redis := $v.state.redis }}
{{- if and (eq $v.state.backend "memory") (gt (int $v.replicaCount) 1) }}
{{- fail (printf "replicaCount=%d needs shared state: with state.backend=memory every pod keeps its own broker state, so compute nodes and clients would see different relays. Keep replicaCount=1, or set state.backend=redis with valkey.enabled=true (bundled Valkey) or state.redis.existingSecret (your own Valkey/Redis)." (int $v.replicaCount)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (eq $v.state.backend "memory") }}
{{- fail "autoscaling.enabled needs shared state: with state.backend=memory every pod keeps its own broker state. Disable autoscaling, or set state.backend=redis with valkey.enabled=true (bundled Valkey) or state.redis.existingSecret (your own Valkey/Redis)." }}
{{- end }}
{{- if eq $v.state.backend "memory" }}
{{- if and $v.strategy (eq (toString $v.strategy.type) "RollingUpdate") }}
{{- fail "strategy.type=RollingUpdate with state.backend=memory: during a rollout the old and the new pod would both serve, each from its own memory (nodes registered on one, requests queued on the other). Memory state needs Recreate (the chart's default when strategy is empty); for rollouts without downtime use state.backend=redis." }}
{{- end }}
{{- if $v.valkey.enabled }}
{{- fail "valkey.enabled=true with state.backend=memory: the relay would not use the bundled Valkey. Set state.backend=redis, or valkey.enabled=false." }}
{{- end }}
{{- range $k := list "url" "existingSecret" "keyPrefix" "commandTimeoutMs" }}
{{- $x := index $redis $k }}
{{- if and (not (kindIs "invalid" $x)) (ne (toString $x) "") }}
{{- fail (printf "state.redis.%s is set but state.backend=memory: a setting for a backend that is not used is a mistake (the relay refuses TOKENPLACE_RELAY_REDIS_URL without the redis backend too). Set state.backend=redis or remove it." $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $v.state.backend "redis" }}
{{- if not (or $redis.url $redis.existingSecret $v.valkey.enabled) }}
{{- fail "state.backend=redis needs a datastore: valkey.enabled=true (the chart runs Valkey and builds the URL), or state.redis.existingSecret (a Secret whose key state.redis.existingSecretKey holds redis://[user:password@]host:port/db or rediss://...)" }}
{{- end }}
{{- if and $redis.url $redis.existingSecret }}
{{- fail "state.redis: set url or existingSecret, not both" }}
{{- end }}
{{- if and $v.valkey.enabled (or $redis.url $redis.existingSecret) }}
{{- fail "valkey.enabled=true and state.redis.url/existingSecret are exclusive: the bundled Valkey's URL comes from its own Secret. Use one datastore." }}
{{- end }}
{{- end }}
{{- if and $v.strategy $v.strategy.rollingUpdate (ne (toString $v.strategy.type) "RollingUpdate") }}
{{- fail "strategy.rollingUpdate only applies to strategy.type=RollingUpdate" }}
{{- end }}
{{- range $redis.egress.cidrs }}
{{- if hasSuffix "/0" . }}
{{- fail (printf "state.redis.egress.cidrs: %q would allow the whole internet; list the datastore's address(es)" .) }}
{{- end }}
{{- end }}
{{- if $v.valkey.enabled }}
{{- $maxmem := include "tokenplace-relay.valkey.maxmemoryBytes" . | int64 }}
{{- /* The relay's default RELAY_V1_MAX_STORED_BYTES (src/config/api-v1.ts, src/config/defaults.ts):
  the memory budget is 3/4 of the container limit (512 MiB without one), less the 64 MiB runtime
  reserve, half of the rest for stored payloads, and 3/4 of that for API v1 when legacy routes run too. */}}
{{- $limit := include "tokenplace-relay.miGiBytes" (dig "limits" "memory" "" ($v.resources | default dict)) }}
{{- $budget := ternary 536870912 (div (mul (int64 (default 0 $limit)) 3) 4) (eq $limit "") }}
{{- $derived := div (sub $budget 67108864) 2 }}
{{- if $v.relay.legacyRoutes }}{{- $derived = div (mul $derived 3) 4 }}{{- end }}
{{- $stored := ternary $derived (int64 (default 0 $v.relay.apiV1.maxStoredBytes)) (kindIs "invalid" $v.relay.apiV1.maxStoredBytes) }}
{{- if gt (mul $stored 4) (mul $maxmem 3) }}
{{- fail (printf "relay.apiV1.maxStoredBytes (%d; unset, the relay derives %d from its memory budget) must stay within 3/4 of valkey.maxmemory (%s = %d bytes): the relay's own cap (503 storage_full) has to trigger before Valkey refuses writes (noeviction: every state write fails). Raise valkey.maxmemory or lower relay.apiV1.maxStoredBytes." $stored $derived $v.valkey.maxmemory $maxmem) }}
{{- end }}
{{- with $v.valkey.resources.limits }}
{{- with include "tokenplace-relay.miGiBytes" .memory }}
{{- if lt (mul (int64 .) 2) (mul $maxmem 3) }}
{{- fail (printf "valkey.resources.limits.memory (%s) must be at least 1.5 x valkey.maxmemory (%s): Valkey's own overhead and the copy-on-write pages of an AOF rewrite come on top of maxmemory, and an OOM kill restarts the datastore." $v.valkey.resources.limits.memory $v.valkey.maxmemory) }}
{{- end }}
{{- end }}
{{- end }}
{{- $a := $v.valkey.auth }}
{{- if and $a.existingSecret (eq $a.passwordKey $a.urlKey) }}
{{- fail "valkey.auth.passwordKey and valkey.auth.urlKey must differ: one key holds the password Valkey starts with, the other the relay's complete URL" }}
{{- end }}
{{- end }}
{{- if include "tokenplace-relay.chartRedisUrl" . }}
{{- if or (and $v.relay.serverToken.value (eq $v.relay.serverToken.key "redis-url")) (and $v.relay.operatorToken.value (eq $v.relay.operatorToken.key "redis-url")) (and $v.relay.metricsToken.value (eq $v.relay.metricsToken.key "redis-url")) }}
{{- fail "the chart's Secret keeps state.redis.url under the key redis-url: use another key for relay.serverToken.key / relay.operatorToken.key / relay.metricsToken.key" }}
{{- end }}
{{- end }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- if not $v.relay.relayOnly }}
{{- if not $v.upstream.url }}
{{- if and $v.gpuExternalName.enabled (not $v.gpuExternalName.headless.enabled) (not $v.gpuExternalName.host) (not $v.upstream.host) }}
{{- fail "gpuExternalName.host is required: the stable DNS name of the GPU workstation (e.g. gpu.lan.example.org) that the `gpu-server` ExternalName Service points at. Or use gpuExternalName.headless (pinned IPs), set upstream.url, or relay.relayOnly=true (broker only)." }}
{{- end }}
{{- if and (not $v.gpuExternalName.enabled) (not $v.upstream.host) }}
{{- fail "gpuExternalName.enabled=false: set upstream.host or upstream.url so the relay knows where the GPU server is (or relay.relayOnly=true)" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.gpuExternalName.enabled $v.gpuExternalName.headless.enabled }}
{{- if not $v.gpuExternalName.headless.addresses }}
{{- fail "gpuExternalName.headless.enabled requires gpuExternalName.headless.addresses (the GPU box's pinned IPs)" }}
{{- end }}
{{- if $v.gpuExternalName.host }}
{{- fail "gpuExternalName.host and gpuExternalName.headless.enabled are exclusive: an ExternalName Service points at a DNS name, a headless Service at pinned addresses; set one" }}
{{- end }}
{{- if and $v.upstream.port (ne (int $v.upstream.port) (int $v.gpuExternalName.port)) (not $v.upstream.host) (not $v.upstream.url) }}
{{- fail "headless mode: upstream.port must equal gpuExternalName.port (a headless Service does no port mapping)" }}
{{- end }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not $v.relay.relayOnly) (eq (include "tokenplace-relay.gpuCIDRs" .) "[]") }}
{{- fail "networkPolicy.enabled: set networkPolicy.gpuServerCIDRs to the GPU box's address(es), e.g. [192.168.1.50/32]. NetworkPolicy cannot match DNS names, so egress to the ExternalName target needs an ipBlock. (Or use headless mode, whose addresses are allowed automatically, or set networkPolicy.enabled=false.)" }}
{{- end }}
{{- range (concat $v.networkPolicy.gpuServerCIDRs $v.gpuExternalName.headless.addresses) }}
{{- if or (hasSuffix "/0" .) (eq . "0.0.0.0") (eq . "::") }}
{{- fail (printf "networkPolicy/gpuExternalName: %q would allow the whole internet; egress is limited to the GPU box, never 0.0.0.0/0" .) }}
{{- end }}
{{- end }}
{{- range $rule := $v.networkPolicy.extraEgress }}
{{- range $to := (default list $rule.to) }}
{{- if and $to.ipBlock (hasSuffix "/0" (toString $to.ipBlock.cidr)) }}
{{- fail "networkPolicy.extraEgress: an ipBlock of /0 (e.g. 0.0.0.0/0) is refused; egress stays limited to DNS and the GPU box" }}
{{- end }}
{{- end }}
{{- end }}
{{- $drainMs := add (int $v.relay.shutdown.delayMs) (int $v.relay.shutdown.graceMs) }}
{{- if le (mul (int $v.terminationGracePeriodSeconds) 1000) (int $drainMs) }}
{{- fail (printf "terminationGracePeriodSeconds=%d must be longer than the relay's drain (relay.shutdown.delayMs + graceMs = %d ms), else the kubelet kills streams mid-drain" (int $v.terminationGracePeriodSeconds) (int $drainMs)) }}
{{- end }}
{{- if and (not (include "tokenplace-relay.secretName" .)) (not $v.relay.serverToken.allowOpenRegistration) }}
{{- fail "no server token: set relay.serverToken.existingSecret (recommended: kubectl create secret generic ...), or relay.serverToken.value, or relay.serverToken.allowOpenRegistration=true to let any compute node register" }}
{{- end }}
{{- if and $v.relay.serverToken.existingSecret $v.relay.serverToken.value }}
{{- fail "relay.serverToken: set existingSecret or value, not both" }}
{{- end }}
{{- $op := $v.relay.operatorToken }}
{{- if and $op.existingSecret $op.value }}
{{- fail "relay.operatorToken: set existingSecret or value, not both" }}
{{- end }}
{{- if and $op.optional (not $op.existingSecret) }}
{{- fail "relay.operatorToken.optional only applies to relay.operatorToken.existingSecret (a Secret made out of band that may lack the key)" }}
{{- end }}
{{- $opSecret := include "tokenplace-relay.operatorSecretName" . }}
{{- if and $opSecret (eq $opSecret (include "tokenplace-relay.secretName" .)) }}
{{- if eq $op.key $v.relay.serverToken.key }}
{{- fail (printf "relay.operatorToken.key=%q is the server token's key in the same Secret %s: compute nodes would hold the operator token. Use another key (default operator-token)" $op.key $opSecret) }}
{{- end }}
{{- if and $v.relay.serverToken.rotationKey (eq $op.key $v.relay.serverToken.rotationKey) }}
{{- fail (printf "relay.operatorToken.key=%q is relay.serverToken.rotationKey in the same Secret %s: compute nodes would hold the operator token. Use another key (default operator-token)" $op.key $opSecret) }}
{{- end }}
{{- end }}
{{- if and $op.value (eq $op.value $v.relay.serverToken.value) }}
{{- fail "relay.operatorToken.value equals relay.serverToken.value: compute nodes would hold the operator token; use a separate token" }}
{{- end }}
{{- $api := $v.relay.apiV1 }}
{{- $dlMin := ternary 1.0 (float64 (default 0 $api.requestDeadlineMinSeconds)) (kindIs "invalid" $api.requestDeadlineMinSeconds) }}
{{- $dlMax := ternary 3600.0 (float64 (default 0 $api.requestDeadlineMaxSeconds)) (kindIs "invalid" $api.requestDeadlineMaxSeconds) }}
{{- if gt $dlMin $dlMax }}
{{- fail (printf "relay.apiV1.requestDeadlineMinSeconds (%v) must not exceed requestDeadlineMaxSeconds (%v)" $dlMin $dlMax) }}
{{- end }}
{{- if not (kindIs "invalid" $api.requestDeadlineSeconds) }}
{{- $dl := float64 $api.requestDeadlineSeconds }}
{{- if or (lt $dl $dlMin) (gt $dl $dlMax) }}
{{- fail (printf "relay.apiV1.requestDeadlineSeconds (%v) must lie within requestDeadlineMinSeconds..requestDeadlineMaxSeconds (%v..%v; relay defaults 1..3600)" $dl $dlMin $dlMax) }}
{{- end }}
{{- end }}
{{- if include "tokenplace-relay.pdbEnabled" . }}
{{- if and (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and (not $v.autoscaling.enabled) (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "string" $v.podDisruptionBudget.minAvailable)) (ge (int $v.podDisruptionBudget.minAvailable) (int $v.replicaCount)) }}
{{- fail (printf "podDisruptionBudget.minAvailable=%d with replicaCount=%d would block every node drain" (int $v.podDisruptionBudget.minAvailable) (int $v.replicaCount)) }}
{{- end }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "ingress.enabled: set ingress.hosts (no domain is built in)" }}
{{- end }}
{{- /* Private operator endpoints: the metrics token and what the Ingress routes (spec §6.11). */}}
{{- $mt := $v.relay.metricsToken }}
{{- $mtSecret := include "tokenplace-relay.metricsSecretName" . }}
{{- if and $mt.existingSecret $mt.value }}
{{- fail "relay.metricsToken: set existingSecret or value, not both" }}
{{- end }}
{{- if $mtSecret }}
{{- if eq $mtSecret (include "tokenplace-relay.secretName" .) }}
{{- if or (eq $mt.key $v.relay.serverToken.key) (and $v.relay.serverToken.rotationKey (eq $mt.key $v.relay.serverToken.rotationKey)) }}
{{- fail (printf "relay.metricsToken.key=%q is a server token key in the same Secret %s: compute nodes would hold the metrics token (and Prometheus a registration token). Use another key (default metrics-token)" $mt.key $mtSecret) }}
{{- end }}
{{- end }}
{{- if and (eq $mtSecret (include "tokenplace-relay.operatorSecretName" .)) (eq $mt.key $v.relay.operatorToken.key) }}
{{- fail (printf "relay.metricsToken.key=%q is relay.operatorToken.key in the same Secret %s: Prometheus would hold the operator token, which can remove compute nodes. Use another key (default metrics-token)" $mt.key $mtSecret) }}
{{- end }}
{{- end }}
{{- if and $mt.value (or (eq $mt.value $v.relay.serverToken.value) (eq $mt.value $v.relay.operatorToken.value)) }}
{{- fail "relay.metricsToken.value equals the server or operator token value: use a separate token (the relay refuses it too)" }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled $v.relay.metricsDisabled }}
{{- fail "metrics.serviceMonitor.enabled with relay.metricsDisabled=true: every scrape would get 401 metrics_disabled. Disable one of them." }}
{{- end }}
{{- if $v.ingress.enabled }}
{{- if $v.ingress.exposeOperatorRoutes }}
{{- if not $mtSecret }}
{{- fail "ingress.exposeOperatorRoutes=true needs relay.metricsToken (existingSecret or value): /metrics and /relay/diagnostics would be open to the internet" }}
{{- end }}
{{- else }}
{{- range $h := $v.ingress.hosts }}
{{- range $p := include "tokenplace-relay.ingressHostPaths" (list $ $h) | fromJsonArray }}
{{- $type := default "Prefix" $p.pathType }}
{{- $path := trimSuffix "/" $p.path }}
{{- range $r := include "tokenplace-relay.operatorRoutes" $ | fromJsonArray }}
{{- /* Prefix and ImplementationSpecific as a plain string prefix (Traefik's PathPrefix): stricter than Kubernetes' element-wise Prefix. */}}
{{- if or (and (eq $type "Exact") (eq $path $r)) (and (ne $type "Exact") (hasPrefix $path $r)) }}
{{- fail (printf "ingress.hosts[%s]: path %q (%s) would route %s, a private operator endpoint, to the internet. Leave the host's paths out (the chart then routes only the relay's public paths), list public paths only, or set ingress.exposeOperatorRoutes=true with relay.metricsToken" $h.host $p.path $type $r) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
