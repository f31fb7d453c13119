package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/go-logr/logr"
	helmloader "helm.sh/helm/v4/pkg/chart/v2/loader"
	chartv2util "helm.sh/helm/v4/pkg/chart/v2/util"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	sigsyaml "sigs.k8s.io/yaml"

	gardenletconfigv1alpha1 "github.com/gardener/gardener/pkg/apis/config/gardenlet/v1alpha1"
	gardencorev1 "github.com/gardener/gardener/pkg/apis/core/v1"
	gardencorev1beta1 "github.com/gardener/gardener/pkg/apis/core/v1beta1"
	v1beta1constants "github.com/gardener/gardener/pkg/apis/core/v1beta1/constants"
	resourcesv1alpha1 "github.com/gardener/gardener/pkg/apis/resources/v1alpha1"
	"github.com/gardener/gardener/pkg/chartrenderer"
	"github.com/gardener/gardener/pkg/client/kubernetes"
	fakekubernetes "github.com/gardener/gardener/pkg/client/kubernetes/fake"
	"github.com/gardener/gardener/pkg/features"
	"github.com/gardener/gardener/pkg/gardenlet/controller/controllerinstallation/controllerinstallation"
	gardenletfeatures "github.com/gardener/gardener/pkg/gardenlet/features"
)

// recordingRenderer is gardener's chart renderer, remembering what it was asked to render.
type recordingRenderer struct {
	chartrenderer.Interface
	release, namespace string
	values             any
}

func (r *recordingRenderer) RenderArchive(archive []byte, release, namespace string, values any) (*chartrenderer.RenderedChart, error) {
	r.release, r.namespace, r.values = release, namespace, values
	return r.Interface.RenderArchive(archive, release, namespace, values)
}

// report is what `render --output json` prints.
type report struct {
	Release struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"release"`
	// The values the chart was rendered with: the ControllerDeployment's helm.values merged with
	// what gardenlet mixes in under `gardener`, as JSON (what Helm's engine gets).
	Values json.RawMessage `json:"values"`
	// The release namespace as gardenlet creates it on the seed, and its ManagedResource.
	Namespace       *corev1.Namespace                  `json:"namespace"`
	ManagedResource *resourcesv1alpha1.ManagedResource `json:"managedResource"`
	// The objects of the ManagedResource's Secret(s), in key order.
	Objects []map[string]any `json:"objects"`
}

func render(args []string) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var (
		chartPath      = fs.String("chart", "", "chart directory (packaged as `helm package` does) or .tgz archive")
		deploymentPath = fs.String("controller-deployment", "", "ControllerDeployment (core.gardener.cloud/v1 or v1beta1) whose helm.rawChart and values are used")
		valuesPath     = fs.String("values", "", "YAML or JSON file: the ControllerDeployment's helm.values (replaces those of --controller-deployment)")
		seedPath       = fs.String("seed", "", "Seed (core.gardener.cloud/v1beta1, YAML or JSON); status.clusterIdentity is required, as for gardenlet")
		regPath        = fs.String("registration", "", "ControllerRegistration; its name is the release name (default: a registration named kubelink)")
		namespace      = fs.String("namespace", "", "the release namespace: extension-<ControllerInstallation name>, as gardenlet names it")
		kubeVersion    = fs.String("kubernetes-version", "", "the seed's Kubernetes version for .Capabilities (default: the Seed's status.kubernetesVersion)")
		gardenIdentity = fs.String("garden-identity", "garden", "the garden's cluster identity (.gardener.garden.clusterIdentity)")
		gardenerVer    = fs.String("gardener-version", gardenerVersion(), "gardenlet's version (.gardener.version)")
		featureGates   = fs.String("feature-gates", "", "gardenlet's featureGates, e.g. DefaultSeccompProfile=true,RemoveVali=false")
		output         = fs.String("output", "yaml", "yaml: the objects as YAML documents; json: release, values, namespace, ManagedResource and objects")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *seedPath == "" || *namespace == "" || (*chartPath == "") == (*deploymentPath == "") {
		return errors.New("render needs --seed, --namespace and one of --chart or --controller-deployment")
	}
	installationName, ok := strings.CutPrefix(*namespace, "extension-")
	if !ok || installationName == "" {
		return fmt.Errorf("--namespace %q: gardenlet installs into extension-<ControllerInstallation name>", *namespace)
	}

	// gardenlet's main registers its feature gates before anything else; its configuration's
	// featureGates are set on top.
	gardenletfeatures.RegisterFeatureGates()
	if *featureGates != "" {
		gates := map[string]bool{}
		for kv := range strings.SplitSeq(*featureGates, ",") {
			k, v, _ := strings.Cut(kv, "=")
			gates[k] = v == "true"
		}
		if err := features.DefaultFeatureGate.SetFromMap(gates); err != nil {
			return err
		}
	}

	seed, err := loadSeed(*seedPath)
	if err != nil {
		return err
	}
	registration, err := loadRegistration(*regPath)
	if err != nil {
		return err
	}
	deployment, err := loadDeployment(*deploymentPath, *chartPath, registration)
	if err != nil {
		return err
	}
	if *valuesPath != "" {
		docs, err := documents(*valuesPath)
		if err != nil {
			return err
		}
		if len(docs) != 1 {
			return fmt.Errorf("%s: one document expected, found %d", *valuesPath, len(docs))
		}
		deployment.Helm.Values = &apiextensionsv1.JSON{Raw: docs[0]}
	}

	if *kubeVersion == "" && seed.Status.KubernetesVersion != nil {
		*kubeVersion = *seed.Status.KubernetesVersion
	}
	serverVersion, err := parseServerVersion(*kubeVersion)
	if err != nil {
		return err
	}

	// What gardener-controller-manager creates for the Seed: a ControllerInstallation referencing
	// the registration, the deployment and the Seed (its name generated from the registration's).
	installation := &gardencorev1beta1.ControllerInstallation{
		ObjectMeta: metav1.ObjectMeta{Name: installationName},
		Spec: gardencorev1beta1.ControllerInstallationSpec{
			RegistrationRef: corev1.ObjectReference{Name: registration.Name},
			DeploymentRef:   &corev1.ObjectReference{Name: deployment.Name},
			SeedRef:         &corev1.ObjectReference{Name: seed.Name},
		},
	}

	// gardener-controller-manager copies the registration's pod-security annotation onto the
	// installation (controllerregistration/controllerinstallation/reconciler.go), gardenlet turns it
	// into the namespace's enforce label.
	if v, ok := registration.Annotations[v1beta1constants.AnnotationPodSecurityEnforce]; ok {
		metav1.SetMetaDataAnnotation(&installation.ObjectMeta, v1beta1constants.AnnotationPodSecurityEnforce, v)
	}

	gardenClient := fakeclient.NewClientBuilder().
		WithScheme(kubernetes.GardenScheme).
		WithObjects(seed, registration, deployment, installation).
		WithStatusSubresource(&gardencorev1beta1.ControllerInstallation{}).
		Build()
	seedClient := fakeclient.NewClientBuilder().WithScheme(kubernetes.SeedScheme).Build()
	renderer := &recordingRenderer{Interface: chartrenderer.NewWithServerVersion(serverVersion)}

	reconciler := &controllerinstallation.Reconciler{
		GardenClient: gardenClient,
		// Only read for a ControllerDeployment with injectGardenKubeconfig (the generic garden
		// kubeconfig's server); kubelink's has none.
		GardenConfig:          &rest.Config{Host: "https://garden.invalid"},
		SeedClientSet:         fakekubernetes.NewClientSetBuilder().WithClient(seedClient).WithChartRenderer(renderer).Build(),
		Config:                gardenletconfigv1alpha1.GardenletConfiguration{},
		Clock:                 clock.RealClock{},
		Identity:              &gardencorev1beta1.Gardener{ID: "gardenlet", Name: "gardenlet", Version: *gardenerVer},
		GardenClusterIdentity: *gardenIdentity,
		GardenNamespace:       v1beta1constants.GardenNamespace,
	}
	ctx := logf.IntoContext(context.Background(), logr.Discard())
	if _, err := reconciler.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: installation.Name}}); err != nil {
		return fmt.Errorf("gardenlet's ControllerInstallation reconciler: %w%s", err, validCondition(ctx, gardenClient, installation.Name))
	}
	if renderer.namespace != *namespace {
		return fmt.Errorf("gardenlet rendered into namespace %q, not %q", renderer.namespace, *namespace)
	}

	var out report
	out.Release.Name, out.Release.Namespace = renderer.release, renderer.namespace
	if out.Values, err = json.Marshal(renderer.values); err != nil {
		return err
	}
	out.Namespace = &corev1.Namespace{}
	if err := seedClient.Get(ctx, types.NamespacedName{Name: *namespace}, out.Namespace); err != nil {
		return fmt.Errorf("the release namespace: %w", err)
	}
	out.ManagedResource = &resourcesv1alpha1.ManagedResource{}
	if err := seedClient.Get(ctx, types.NamespacedName{Namespace: v1beta1constants.GardenNamespace, Name: installation.Name}, out.ManagedResource); err != nil {
		return fmt.Errorf("the ManagedResource: %w", err)
	}
	if _, out.Objects, err = managedResourceObjects(ctx, seedClient, out.ManagedResource); err != nil {
		return err
	}

	switch *output {
	case "json":
		return json.NewEncoder(os.Stdout).Encode(out)
	case "yaml":
		for _, obj := range out.Objects {
			doc, err := sigsyaml.Marshal(obj)
			if err != nil {
				return err
			}
			fmt.Printf("---\n%s", doc)
		}
		return nil
	default:
		return fmt.Errorf("--output %q: yaml or json", *output)
	}
}

// validCondition is the ControllerInstallation's Valid condition after a failed reconcile, where
// gardenlet says why the chart could not be rendered.
func validCondition(ctx context.Context, c client.Reader, name string) string {
	installation := &gardencorev1beta1.ControllerInstallation{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, installation); err != nil {
		return ""
	}
	for _, cond := range installation.Status.Conditions {
		if cond.Type == gardencorev1beta1.ControllerInstallationValid && cond.Status != gardencorev1beta1.ConditionTrue {
			return fmt.Sprintf("\nControllerInstallation condition %s=%s (%s): %s", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
	}
	return ""
}

// secretObjects reads a ManagedResource Secret as gardener-resource-manager does: every key one
// or more YAML documents, keys in order.
// managedResourceObjects reads the Secrets a ManagedResource names and the objects in them, in order.
func managedResourceObjects(ctx context.Context, c client.Client, mr *resourcesv1alpha1.ManagedResource) ([]*corev1.Secret, []map[string]any, error) {
	var (
		secrets []*corev1.Secret
		objects []map[string]any
	)
	for _, ref := range mr.Spec.SecretRefs {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: mr.Namespace, Name: ref.Name}, secret); err != nil {
			return nil, nil, fmt.Errorf("the ManagedResource's Secret %s: %w", ref.Name, err)
		}
		decoded, err := secretObjects(secret)
		if err != nil {
			return nil, nil, err
		}
		secrets, objects = append(secrets, secret), append(objects, decoded...)
	}
	return secrets, objects, nil
}

func secretObjects(secret *corev1.Secret) ([]map[string]any, error) {
	keys := make([]string, 0, len(secret.Data))
	for k := range secret.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var objects []map[string]any
	for _, key := range keys {
		data := secret.Data[key]
		// Compressed as Gardener's ManagedResource helpers write it (gardener-resource-manager reads both).
		if strings.HasSuffix(key, resourcesv1alpha1.BrotliCompressionSuffix) {
			plain, err := io.ReadAll(brotli.NewReader(bytes.NewReader(data)))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			data = plain
		}
		reader := kubernetes.NewManifestReader(data)
		for {
			obj, err := reader.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			objects = append(objects, obj.Object)
		}
	}
	return objects, nil
}

func parseServerVersion(v string) (*version.Info, error) {
	var major, minor, patch int
	if _, err := fmt.Sscanf(v, "v%d.%d.%d", &major, &minor, &patch); err != nil {
		if _, err := fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &patch); err != nil {
			return nil, fmt.Errorf("the seed's Kubernetes version %q (--kubernetes-version or the Seed's status.kubernetesVersion): %w", v, err)
		}
	}
	return &version.Info{GitVersion: fmt.Sprintf("v%d.%d.%d", major, minor, patch), Major: fmt.Sprint(major), Minor: fmt.Sprint(minor)}, nil
}

// loadSeed reads a Seed as gardenlet reads it from gardener-apiserver: decoded, defaulted,
// validated (gardener-apiserver refuses an invalid one), and back in v1beta1.
func loadSeed(path string) (*gardencorev1beta1.Seed, error) {
	obj, err := decodeOne(path, "Seed")
	if err != nil {
		return nil, err
	}
	if errs := validateObject(obj); len(errs) > 0 {
		return nil, fmt.Errorf("%s: gardener-apiserver would refuse this Seed:\n%s", path, strings.Join(errs, "\n"))
	}
	seed := &gardencorev1beta1.Seed{}
	return seed, coreScheme.Convert(obj, seed, nil)
}

// loadRegistration reads the ControllerRegistration, or makes the smallest one named kubelink.
func loadRegistration(path string) (*gardencorev1beta1.ControllerRegistration, error) {
	registration := &gardencorev1beta1.ControllerRegistration{}
	if path == "" {
		registration.Name = "kubelink"
		registration.Spec.Resources = []gardencorev1beta1.ControllerResource{{Kind: "Extension", Type: "kubelink-wireguard"}}
		return registration, nil
	}
	obj, err := decodeOne(path, "ControllerRegistration")
	if err != nil {
		return nil, err
	}
	if errs := validateObject(obj); len(errs) > 0 {
		return nil, fmt.Errorf("%s: gardener-apiserver would refuse this ControllerRegistration:\n%s", path, strings.Join(errs, "\n"))
	}
	return registration, coreScheme.Convert(obj, registration, nil)
}

// loadDeployment reads the ControllerDeployment, or makes one with the chart packaged as rawChart,
// named as the registration's deploymentRefs say.
func loadDeployment(path, chartPath string, registration *gardencorev1beta1.ControllerRegistration) (*gardencorev1.ControllerDeployment, error) {
	deployment := &gardencorev1.ControllerDeployment{}
	if path != "" {
		obj, err := decodeOne(path, "ControllerDeployment")
		if err != nil {
			return nil, err
		}
		if errs := validateObject(obj); len(errs) > 0 {
			return nil, fmt.Errorf("%s: gardener-apiserver would refuse this ControllerDeployment:\n%s", path, strings.Join(errs, "\n"))
		}
		if err := coreScheme.Convert(obj, deployment, nil); err != nil {
			return nil, err
		}
		if deployment.Helm == nil || len(deployment.Helm.RawChart) == 0 {
			return nil, fmt.Errorf("%s: only a helm.rawChart can be rendered here (no OCI registry)", path)
		}
	} else {
		archive, err := chartArchive(chartPath)
		if err != nil {
			return nil, err
		}
		deployment.Name = registration.Name
		deployment.Helm = &gardencorev1.HelmControllerDeployment{RawChart: archive}
	}
	if registration.Spec.Deployment == nil || len(registration.Spec.Deployment.DeploymentRefs) == 0 {
		registration.Spec.Deployment = &gardencorev1beta1.ControllerRegistrationDeployment{
			DeploymentRefs: []gardencorev1beta1.DeploymentRef{{Name: deployment.Name}},
		}
	} else if ref := registration.Spec.Deployment.DeploymentRefs[0].Name; ref != deployment.Name {
		return nil, fmt.Errorf("the ControllerRegistration refers to ControllerDeployment %q, not %q", ref, deployment.Name)
	}
	return deployment, nil
}

// chartArchive is the chart as a .tgz: read from a file, or a directory packaged with Helm's own
// library (what `helm package` does).
func chartArchive(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return os.ReadFile(path)
	}
	chart, err := helmloader.LoadDir(path)
	if err != nil {
		return nil, fmt.Errorf("loading the chart %s: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "gardener-contract-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file, err := chartv2util.Save(chart, dir)
	if err != nil {
		return nil, fmt.Errorf("packaging the chart %s: %w", path, err)
	}
	return os.ReadFile(file)
}
