package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"

	corevalidation "github.com/gardener/gardener/pkg/api/core/validation"
	operatorvalidation "github.com/gardener/gardener/pkg/api/operator/v1alpha1/validation"
	"github.com/gardener/gardener/pkg/apis/core"
	coreinstall "github.com/gardener/gardener/pkg/apis/core/install"
	gardencorev1beta1 "github.com/gardener/gardener/pkg/apis/core/v1beta1"
	operatorv1alpha1 "github.com/gardener/gardener/pkg/apis/operator/v1alpha1"
	apiserverfeatures "github.com/gardener/gardener/pkg/apiserver/features"
	gardencoreinformers "github.com/gardener/gardener/pkg/client/core/informers/externalversions"
	operatorutils "github.com/gardener/gardener/pkg/utils/gardener/operator"
	"github.com/gardener/gardener/plugin/pkg/global/extensionvalidation"
)

// coreScheme has core.gardener.cloud (internal, v1, v1beta1, with their defaults and conversions,
// as gardener-apiserver installs them) and operator.gardener.cloud/v1alpha1.
var coreScheme = runtime.NewScheme()

// decoder decodes as gardener-apiserver does for a request with fieldValidation=Strict (kubectl's
// default): unknown or duplicate fields are errors; the object is defaulted and converted to the
// internal version (operator.gardener.cloud has none: v1alpha1).
var decoder runtime.Decoder

func init() {
	coreinstall.Install(coreScheme)
	utilruntime.Must(operatorv1alpha1.AddToScheme(coreScheme))
	codecs := serializer.NewCodecFactory(coreScheme, serializer.EnableStrict)
	decoder = codecs.UniversalDecoder(core.SchemeGroupVersion, operatorv1alpha1.SchemeGroupVersion)
}

// decodeDoc decodes one JSON document; a strict-decoding error is returned with the object.
func decodeDoc(doc []byte) (runtime.Object, error) {
	obj, _, err := decoder.Decode(doc, nil, nil)
	if err != nil && obj == nil {
		var meta metav1.TypeMeta
		_ = json.Unmarshal(doc, &meta)
		return nil, fmt.Errorf("%s %s: %w", meta.APIVersion, meta.Kind, err)
	}
	return obj, err
}

// decodeOne reads a file with exactly one object of `kind`.
func decodeOne(path, kind string) (runtime.Object, error) {
	docs, err := documents(path)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("%s: one %s expected, found %d documents", path, kind, len(docs))
	}
	obj, err := decodeDoc(docs[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if got := kindOf(obj); got != kind {
		return nil, fmt.Errorf("%s: a %s, not a %s", path, got, kind)
	}
	return obj, nil
}

func kindOf(obj runtime.Object) string {
	kinds, _, err := coreScheme.ObjectKinds(obj)
	if err != nil || len(kinds) == 0 {
		return fmt.Sprintf("%T", obj)
	}
	return kinds[0].Kind
}

func nameOf(obj runtime.Object) string {
	if o, ok := obj.(metav1.Object); ok {
		if o.GetNamespace() != "" {
			return o.GetNamespace() + "/" + o.GetName()
		}
		return o.GetName()
	}
	return ""
}

// validateObject runs the validation gardener-apiserver (core.gardener.cloud) or
// gardener-operator's webhook (operator.gardener.cloud Extension) runs on create.
func validateObject(obj runtime.Object) []string {
	var errs field.ErrorList
	switch o := obj.(type) {
	case *core.ControllerRegistration:
		errs = corevalidation.ValidateControllerRegistration(o)
	case *core.ControllerDeployment:
		errs = corevalidation.ValidateControllerDeployment(o)
	case *core.Seed:
		errs = corevalidation.ValidateSeed(o)
	case *core.Shoot:
		errs = corevalidation.ValidateShoot(o)
	case *operatorv1alpha1.Extension:
		errs = operatorvalidation.ValidateExtension(o)
	default:
		return []string{fmt.Sprintf("%s: not a ControllerRegistration, ControllerDeployment, operator Extension, Seed or Shoot", kindOf(obj))}
	}
	lines := make([]string, 0, len(errs))
	for _, e := range errs {
		lines = append(lines, fmt.Sprintf("%s %q: %s", kindOf(obj), nameOf(obj), e.Error()))
	}
	return lines
}

func validateRegistration(paths []string) error {
	if len(paths) == 0 {
		return fmt.Errorf("validate-registration needs files")
	}
	// Shoot validation reads gardener-apiserver's feature gates (at their defaults here).
	apiserverfeatures.RegisterFeatureGates()
	var (
		problems      []string
		registrations = map[string]*gardencorev1beta1.ControllerRegistration{}
		derived       = map[string]*gardencorev1beta1.ControllerRegistration{}
		admitted      []runtime.Object
		checked       int
	)
	for _, path := range paths {
		docs, err := documents(path)
		if err != nil {
			return err
		}
		for i, doc := range docs {
			where := fmt.Sprintf("%s (document %d)", path, i+1)
			obj, err := decodeDoc(doc)
			if obj == nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where, err))
				continue
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %s %q: %v", where, kindOf(obj), nameOf(obj), err))
			}
			checked++
			for _, p := range validateObject(obj) {
				problems = append(problems, where+": "+p)
			}
			switch o := obj.(type) {
			case *core.ControllerRegistration:
				stored := &gardencorev1beta1.ControllerRegistration{}
				utilruntime.Must(coreScheme.Convert(o, stored, nil))
				registrations[o.Name] = stored
			case *operatorv1alpha1.Extension:
				// What gardener-operator makes of it in the virtual garden, and whether
				// gardener-apiserver takes that.
				if o.Spec.Deployment == nil || o.Spec.Deployment.ExtensionDeployment == nil || o.Spec.Deployment.ExtensionDeployment.Helm == nil {
					continue
				}
				reg, dep := operatorutils.ControllerRegistrationForExtension(o)
				for _, versioned := range []runtime.Object{reg, dep} {
					coreScheme.Default(versioned)
					internal, err := coreScheme.ConvertToVersion(versioned, core.SchemeGroupVersion)
					if err != nil {
						problems = append(problems, fmt.Sprintf("%s: converting what gardener-operator creates: %v", where, err))
						continue
					}
					for _, p := range validateObject(internal) {
						problems = append(problems, where+": as gardener-operator registers it: "+p)
					}
				}
				derived[reg.Name] = reg
			case *core.Seed, *core.Shoot:
				admitted = append(admitted, obj)
			}
		}
	}
	for name, reg := range derived {
		if _, ok := registrations[name]; !ok {
			registrations[name] = reg
		}
	}
	problems = append(problems, admitExtensions(admitted, registrations)...)
	for _, p := range problems {
		fmt.Println(strings.TrimSpace(p))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problem(s) in %d object(s)", len(problems), checked)
	}
	fmt.Fprintf(os.Stderr, "gardener-contract: %d object(s) valid\n", checked)
	return nil
}

// admitExtensions runs gardener-apiserver's ExtensionValidator admission plugin on each Seed and
// Shoot, with the given ControllerRegistrations as its lister's content: every extension type a
// Seed or Shoot uses must be registered primarily, and compatible with that cluster type.
func admitExtensions(objects []runtime.Object, registrations map[string]*gardencorev1beta1.ControllerRegistration) []string {
	if len(objects) == 0 {
		return nil
	}
	plugin, err := extensionvalidation.New()
	utilruntime.Must(err)
	factory := gardencoreinformers.NewSharedInformerFactory(nil, 0)
	plugin.SetCoreInformerFactory(factory)
	indexer := factory.Core().V1beta1().ControllerRegistrations().Informer().GetIndexer()
	for _, reg := range registrations {
		utilruntime.Must(indexer.Add(reg))
	}
	plugin.AssignReadyFunc(func() bool { return true })
	utilruntime.Must(plugin.ValidateInitialization())

	var problems []string
	for _, obj := range objects {
		meta := obj.(metav1.Object)
		kind := kindOf(obj)
		resource := core.SchemeGroupVersion.WithResource(strings.ToLower(kind) + "s")
		attrs := admission.NewAttributesRecord(obj, nil, core.SchemeGroupVersion.WithKind(kind), meta.GetNamespace(), meta.GetName(),
			resource, "", admission.Create, &metav1.CreateOptions{}, false, nil)
		if err := plugin.Validate(context.Background(), attrs, nil); err != nil {
			problems = append(problems, fmt.Sprintf("%s %q: %v", kind, nameOf(obj), err))
		}
	}
	return problems
}
