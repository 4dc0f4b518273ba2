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
Whether the chart renders its own Secret (a token given as a value rather than existingSecret).
*/}}
{{- define "tokenplace-relay.chartSecret" -}}
{{- $t := .Values.relay.serverToken }}
{{- $o := .Values.relay.operatorToken }}
{{- if or (and $t.value (not $t.existingSecret)) (and $o.value (not $o.existingSecret)) }}true{{ end }}
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
{{- $aff := deepCopy (default dict .Values.affinity) }}
{{- if .Values.arm64PageSize.enforce }}
{{- $alts := list
      (dict "key" "kubernetes.io/arch" "operator" "NotIn" "values" (list "arm64"))
      (dict "key" .Values.arm64PageSize.nodeLabel "operator" "In" "values" (list .Values.arm64PageSize.nodeLabelValue)) }}
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
Cross-field rules. Included from the Deployment so every render checks them.
*/}}
{{- define "tokenplace-relay.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.state.backend "memory") (gt (int $v.replicaCount) 1) }}
{{- fail (printf "replicaCount=%d needs shared state: the relay keeps broker state in memory per pod (state.backend=memory), so compute nodes and clients would see different relays. Keep replicaCount=1, or set state.backend=redis with state.redis.url or state.redis.existingSecret once the relay supports it." (int $v.replicaCount)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (eq $v.state.backend "memory") }}
{{- fail "autoscaling.enabled needs shared state: the relay keeps broker state in memory per pod (state.backend=memory). Disable autoscaling, or set state.backend=redis with state.redis.url or state.redis.existingSecret once the relay supports it." }}
{{- end }}
{{- if and (eq $v.state.backend "redis") (not (or $v.state.redis.url $v.state.redis.existingSecret)) }}
{{- fail "state.backend=redis needs state.redis.url or state.redis.existingSecret" }}
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
{{- if $v.podDisruptionBudget.enabled }}
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
{{- end }}
