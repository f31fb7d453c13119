{{- define "kubelink.labels" -}}
app.kubernetes.io/name: kubelink
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kubelink.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The Seed this release serves: gardenlet's gardener.seed.name, else seedName. */}}
{{- define "kubelink.seedName" -}}
{{- $injected := ((.Values.gardener | default dict).seed | default dict).name -}}
{{ required "seedName is required: set seedName to the name of the Seed this release serves (gardenlet sets gardener.seed.name)" (coalesce $injected .Values.seedName) }}
{{- end -}}

{{/* The providerConfig of the seed's own kubelink-wireguard entry, as JSON ({} without one): what
gardenlet injects from the Seed (gardener.seed.spec.extensions[]). */}}
{{- define "kubelink.seedProviderConfig" -}}
{{- $found := dict -}}
{{- $spec := ((.Values.gardener | default dict).seed | default dict).spec | default dict -}}
{{- range ($spec.extensions | default list) -}}
{{- if eq (toString .type) "kubelink-wireguard" -}}
{{- $found = .providerConfig | default dict -}}
{{- end -}}
{{- end -}}
{{ toJson $found }}
{{- end -}}

{{/* Gateway slots, one setting per seed: the seed's providerConfig slots, else the value slots. A
providerConfig with slots other than 1 or 2 falls back to the value: the extension controller reports
that one as not ready, naming the field. */}}
{{- define "kubelink.slots" -}}
{{- $config := include "kubelink.seedProviderConfig" . | fromJson -}}
{{- if has (toString $config.slots) (list "1" "2") -}}
{{ int $config.slots }}
{{- else -}}
{{ int .Values.slots }}
{{- end -}}
{{- end -}}

{{/* The gateways' device MTU: the seed's providerConfig mtu (which the extension controller also
writes into every shoot's Secret), else agent.mtu. */}}
{{- define "kubelink.mtu" -}}
{{- $config := include "kubelink.seedProviderConfig" . | fromJson -}}
{{- if regexMatch "^[0-9]+$" (toString ($config.mtu | default "")) -}}
{{ int $config.mtu }}
{{- else -}}
{{ .Values.agent.mtu }}
{{- end -}}
{{- end -}}

{{/* The slot Leases and slot Secrets: kubelink-gateway-0 ... kubelink-gateway-<slots-1>, as a YAML flow list. */}}
{{- define "kubelink.slotNames" -}}
[{{- range $i, $slot := until (int (include "kubelink.slots" .)) }}{{ if $i }}, {{ end }}"kubelink-gateway-{{ $slot }}"{{ end -}}]
{{- end -}}

{{/* Scheduling and pull settings of a pod: `include "kubelink.podPlacement" (list $ .Values.agent)`. */}}
{{- define "kubelink.podPlacement" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
