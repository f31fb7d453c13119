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

{{/* The slot Leases and slot Secrets: kubelink-gateway-0 ... kubelink-gateway-<slots-1>, as a YAML flow list. */}}
{{- define "kubelink.slotNames" -}}
[{{- range $i, $slot := until (int .Values.slots) }}{{ if $i }}, {{ end }}"kubelink-gateway-{{ $slot }}"{{ end -}}]
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
