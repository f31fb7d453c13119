{{- define "kubelink-garden.seedName" -}}
{{ required "seedName is required: set seedName to the name of the Seed whose IPAM controller uses this identity" .Values.seedName }}
{{- end -}}

{{- define "kubelink-garden.serviceAccountName" -}}
{{ default (printf "kubelink-ipam-%s" (include "kubelink-garden.seedName" .)) .Values.ipam.serviceAccount.name }}
{{- end -}}

{{- define "kubelink-garden.labels" -}}
app.kubernetes.io/name: kubelink-garden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
kubelink.gardener.cloud/seed: {{ include "kubelink-garden.seedName" . | quote }}
{{- end -}}
