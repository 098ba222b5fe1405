package repo

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The JSON objects of docs/repository-format.md against the Go types that
// read and write them: every field the code stores is specified, and every
// field the spec shows exists in the code, at every level.

const specPath = "../../docs/repository-format.md"

func readSpec(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// specJSON returns the JSON code blocks of the section whose heading starts
// with heading, decoded.
func specJSON(t *testing.T, spec, heading string) []map[string]any {
	t.Helper()
	i := strings.Index(spec, "\n"+heading)
	if i < 0 {
		t.Fatalf("%s has no section %q", specPath, heading)
	}
	sec := spec[i+1:]
	if j := regexp.MustCompile(`\n#{2,3} `).FindStringIndex(sec[len(heading):]); j != nil {
		sec = sec[:len(heading)+j[0]]
	}
	var out []map[string]any
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(sec, -1) {
		var v map[string]any
		if err := json.Unmarshal([]byte(m[1]), &v); err != nil {
			t.Fatalf("section %q: a JSON example does not parse: %v\n%s", heading, err, m[1])
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		t.Fatalf("section %q has no JSON example", heading)
	}
	return out
}

// jsonFields maps the JSON names of struct type typ to their types.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// compareKeys requires the spec's keys at path to be exactly typ's JSON
// fields.
func compareKeys(t *testing.T, path string, spec []string, typ reflect.Type) {
	t.Helper()
	code := jsonFields(typ)
	inSpec := map[string]bool{}
	for _, k := range spec {
		inSpec[k] = true
		if _, ok := code[k]; !ok {
			t.Errorf("%s: the spec shows %q, which %s does not have", path, k, typ)
		}
	}
	for _, k := range sortedKeys(code) {
		if !inSpec[k] {
			t.Errorf("%s: %s stores %q, which the spec does not show", path, typ, k)
		}
	}
}

// elem is the struct type under pointers and slices.
func elem(typ reflect.Type) reflect.Type {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	return typ
}

// checkObject compares a spec example with typ recursively, for the
// nested objects the example shows.
func checkObject(t *testing.T, path string, v map[string]any, typ reflect.Type) {
	t.Helper()
	compareKeys(t, path, sortedKeys(v), typ)
	fields := jsonFields(typ)
	for _, k := range sortedKeys(v) {
		ft, ok := fields[k]
		if !ok || elem(ft).Kind() != reflect.Struct || elem(ft).PkgPath() != typ.PkgPath() {
			continue
		}
		switch x := v[k].(type) {
		case map[string]any:
			checkObject(t, path+"."+k, x, elem(ft))
		case []any:
			if len(x) > 0 {
				if o, ok := x[0].(map[string]any); ok {
					checkObject(t, path+"."+k+"[]", o, elem(ft))
				}
			}
		}
	}
}

func TestSpecManifestFields(t *testing.T) {
	// Every field is shown by one of the examples (the first one's shape
	// wins; a snapshot backup's manifest has its own example).
	spec := readSpec(t)
	ex := append(specJSON(t, spec, "## Manifests"), specJSON(t, spec, "### Snapshot backups")...)
	all := map[string]any{}
	for _, e := range ex {
		for k, v := range e {
			if _, ok := all[k]; !ok {
				all[k] = v
			}
		}
	}
	checkObject(t, "manifest", all, reflect.TypeFor[Manifest]())
}

func TestSpecIndexConfigAndKeySlotFields(t *testing.T) {
	spec := readSpec(t)
	checkObject(t, "index", specJSON(t, spec, "## Index")[0], reflect.TypeFor[indexFile]())
	checkObject(t, "config", specJSON(t, spec, "### `config`")[0], reflect.TypeFor[Config]())
	// The password slot and the random slot together show every field.
	union := map[string]any{}
	for _, ex := range specJSON(t, spec, "### Key slots") {
		for k, v := range ex {
			union[k] = v
		}
	}
	checkObject(t, "key slot", union, reflect.TypeFor[keySlot]())
}

// braceList returns the names in the first "{a, b, c}" after marker.
func braceList(t *testing.T, spec, marker string) []string {
	t.Helper()
	i := strings.Index(spec, marker)
	if i < 0 {
		t.Fatalf("%s does not say %q", specPath, marker)
	}
	m := regexp.MustCompile(`\{([a-z_, \n]+)\}`).FindStringSubmatch(spec[i:])
	if m == nil {
		t.Fatalf("no {field, ...} list after %q", marker)
	}
	var out []string
	for _, f := range strings.Split(m[1], ",") {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}

func TestSpecSegmentHeaderAndMarkerFields(t *testing.T) {
	spec := readSpec(t)
	compareKeys(t, "segment header", braceList(t, spec, "where `h` is JSON"), reflect.TypeFor[Segment]())
	compareKeys(t, "writer marker", braceList(t, spec, "| `writers/<32 hex random>` | JSON"), reflect.TypeFor[markerInfo]())
	compareKeys(t, "prune lock", braceList(t, spec, "| `locks/prune-<time>-<random>` | JSON"), reflect.TypeFor[lockInfo]())
}
