{{- define "kubelink.labels" -}}
app.kubernetes.io/name: kubelink
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kubelink.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
