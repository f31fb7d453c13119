// Command gardener-contract runs Gardener's own code on kubelink's chart and registration objects,
// from the gardener module at the release go.mod pins (scripts/k8s-tools builds it):
//
//	gardener-contract render --seed FILE --namespace extension-NAME (--chart DIR|TGZ | --controller-deployment FILE)
//	    [--registration FILE] [--values FILE] [--kubernetes-version V] [--garden-identity ID]
//	    [--gardener-version V] [--feature-gates A=true,B=false] [--output yaml|json]
//
// renders the chart as gardenlet does: gardenlet's ControllerInstallation reconciler itself
// (pkg/gardenlet/controller/controllerinstallation/controllerinstallation) runs once against
// in-memory garden and seed clients, and what it wrote into its class-seed ManagedResource is printed.
//
//	gardener-contract render-vpn-shoot --namespace shoot--PROJECT--NAME [--ha-clients N] [--pods CIDR]
//	    [--services CIDR] [--nodes CIDR] [--seed-pods CIDR] [--endpoint HOST] [--kubernetes-version V]
//
// runs Gardener's vpn-shoot component as gardenlet's botanist configures it and prints, as JSON, the
// class-shoot ManagedResource it writes into the control-plane namespace, its Secrets and their
// objects (the Deployment, or with --ha-clients the StatefulSet, that kubelink's shoot webhook mutates).
//
//	gardener-contract validate-registration FILE...
//
// decodes every document (ControllerRegistration, ControllerDeployment, operator Extension, Seed,
// Shoot) as gardener-apiserver or gardener-operator's webhook would, validates it with Gardener's
// validation functions and checks each Seed's and Shoot's extension types with gardener-apiserver's
// ExtensionValidator admission plugin against the ControllerRegistrations given. Errors go to stdout,
// one per line; the exit status is 1 when there is any.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/util/yaml"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "render":
		err = render(os.Args[2:])
	case "validate-registration":
		err = validateRegistration(os.Args[2:])
	case "render-vpn-shoot":
		err = renderVPNShoot(os.Args[2:])
	case "version":
		fmt.Println(gardenerVersion())
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gardener-contract:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: gardener-contract render|render-vpn-shoot|validate-registration|version ... (see the package comment)")
	os.Exit(2)
}

// gardenerVersion is the gardener module this binary was built with (what gardenlet reports as
// its version, `.gardener.version` in the chart's values).
func gardenerVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/gardener/gardener" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

// documents splits a YAML (or JSON) file into its documents, each as JSON.
func documents(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	reader := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isOnlyComments(doc) {
			continue
		}
		json, err := yaml.ToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if string(json) == "null" {
			continue
		}
		docs = append(docs, json)
	}
}

func isOnlyComments(doc []byte) bool {
	for line := range bytes.SplitSeq(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}
