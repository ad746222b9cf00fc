// Package objects reads Kubernetes objects the way the API machinery holds them.
package objects

import (
	"bufio"
	"errors"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// Read takes YAML or JSON: one object, several YAML documents, or a List (such as
// `kubectl get -o json` prints), and returns the objects in the order read. Numbers come
// out as int64 when whole and float64 otherwise, as in objects read from the API server,
// so code written for live objects (kstatus' NestedInt64, Argo CD's Lua conversion)
// sees the same types.
func Read(in io.Reader) ([]*unstructured.Unstructured, error) {
	documents := yaml.NewYAMLReader(bufio.NewReader(in))
	var read []*unstructured.Unstructured
	for {
		document, err := documents.Read()
		if errors.Is(err, io.EOF) {
			return read, nil
		}
		if err != nil {
			return nil, err
		}
		asJSON, err := sigsyaml.YAMLToJSON(document)
		if err != nil {
			return nil, err
		}
		var fields map[string]interface{}
		if err := utiljson.Unmarshal(asJSON, &fields); err != nil {
			return nil, err
		}
		if fields == nil {
			continue // an empty document
		}
		object := &unstructured.Unstructured{Object: fields}
		if !object.IsList() {
			read = append(read, object)
			continue
		}
		list, err := object.ToList()
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			read = append(read, &list.Items[i])
		}
	}
}
