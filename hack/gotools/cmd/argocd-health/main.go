// Command argocd-health runs an Argo CD resource health script on one Kubernetes object
// and prints {"status": ..., "message": ...} as JSON.
//
//	argocd-health SCRIPT.lua < object.(json|yaml)
//
// It runs the script the way Argo CD's util/lua runs a health script configured in
// argocd-cm (resource.customizations.health.<group>_<kind>), so a script that passes here
// behaves the same in Argo CD:
//   - only the package, base and table libraries are open (Argo CD opens the rest only for
//     its built-in scripts); Argo CD also offers os.time and os.date, which this runner
//     leaves out, so a script that calls them fails here rather than passing untested;
//   - the global obj is the object converted as Argo CD's decodeValue does: maps become
//     hash tables, arrays become sequences (1-based, so ipairs and # work), whole numbers
//     are numbers, null is nil;
//   - the script has one second;
//   - it must return a table; a status Argo CD does not know becomes Unknown, with
//     Argo CD's message for it, and an empty table is an empty status.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"patchbay.local/gotools/internal/objects"
)

// the health statuses Argo CD accepts from a script (gitops-engine's HealthStatusCode)
var knownStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

const invalidHealthStatus = "Lua returned an invalid health status"

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// toLua converts a value of an unstructured object as Argo CD's decodeValue does.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case []interface{}:
		array := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			array.Append(toLua(l, item))
		}
		return array
	case map[string]interface{}:
		table := l.CreateTable(0, len(converted))
		for key, item := range converted {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}

func stringField(table *lua.LTable, name string) (string, error) {
	switch value := table.RawGetString(name).(type) {
	case lua.LString:
		return string(value), nil
	case *lua.LNilType:
		return "", nil
	default:
		return "", fmt.Errorf("the returned %s is a %s, not a string", name, value.Type())
	}
}

func evaluate(object *unstructured.Unstructured, script string) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	// in Argo CD's order
	for _, library := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		call := lua.P{Fn: l.NewFunction(library.open), Protect: true}
		if err := l.CallByParam(call, lua.LString(library.name)); err != nil {
			return health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object.Object))
	if err := l.DoString(script); err != nil {
		return health{}, err
	}
	returned, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	if key, _ := returned.Next(lua.LNil); key == lua.LNil {
		return health{}, nil
	}
	status, err := stringField(returned, "status")
	if err != nil {
		return health{}, err
	}
	message, err := stringField(returned, "message")
	if err != nil {
		return health{}, err
	}
	if !knownStatuses[status] {
		return health{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return health{Status: status, Message: message}, nil
}

func run(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: argocd-health SCRIPT.lua < object")
	}
	script, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	read, err := objects.Read(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	if len(read) != 1 {
		return fmt.Errorf("expected one object on stdin, got %d", len(read))
	}
	result, err := evaluate(read[0], string(script))
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(result)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}
