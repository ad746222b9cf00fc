// Command kstatus prints the kstatus status of Kubernetes objects, as computed by
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute: the library Flux, kpt and
// cli-utils' applier use to decide whether an object has reconciled.
//
// It reads YAML or JSON from stdin: one object, several documents, or a List (such as
// `kubectl get -o json` prints), and writes a JSON array with one
// {"status": ..., "message": ...} per object, in the order read.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"patchbay.local/gotools/internal/objects"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func run() error {
	read, err := objects.Read(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading objects: %w", err)
	}
	results := make([]result, 0, len(read))
	for _, object := range read {
		computed, err := status.Compute(object)
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", object.GetKind(), object.GetNamespace(), object.GetName(), err)
		}
		results = append(results, result{Status: computed.Status.String(), Message: computed.Message})
	}
	return json.NewEncoder(os.Stdout).Encode(results)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
