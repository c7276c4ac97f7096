package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

func sprintf(format string, args ...any) string {
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}

var durationType = reflect.TypeFor[time.Duration]()

// Decode decodes node over out, a pointer to a struct already holding the
// defaults. It is strict: an unknown key, a value of the wrong type or a
// duration without a unit is a problem reported with its key path below
// path. A key whose value is empty (null) keeps its default.
func Decode(node *yaml.Node, out any, path string) error {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("config.Decode: out must be a non-nil pointer, got %T", out)
	}
	var errs Errors
	decode(node, v.Elem(), path, &errs)
	return errs.Err()
}

func decode(node *yaml.Node, v reflect.Value, path string, errs *Errors) {
	if node == nil {
		return
	}
	if node.Kind == yaml.DocumentNode {
		if len(node.Content) == 0 {
			return
		}
		node = node.Content[0]
	}
	if node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return // empty value: keep the default
	}
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		decode(node, v.Elem(), path, errs)
	case v.Kind() == reflect.Struct:
		decodeStruct(node, v, path, errs)
	case v.Kind() == reflect.Slice && needsWalk(v.Type().Elem()):
		if node.Kind != yaml.SequenceNode {
			errs.Addf(path, "must be a list (line %d)", node.Line)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(node.Content), len(node.Content))
		for i, item := range node.Content {
			decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(s)
	case v.Kind() == reflect.Map && needsWalk(v.Type().Elem()):
		if node.Kind != yaml.MappingNode {
			errs.Addf(path, "must be a mapping (line %d)", node.Line)
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(node.Content)/2)
		for i := 0; i+1 < len(node.Content); i += 2 {
			k := reflect.New(v.Type().Key()).Elem()
			if err := node.Content[i].Decode(k.Addr().Interface()); err != nil {
				errs.Addf(path, "bad key %q (line %d)", node.Content[i].Value, node.Content[i].Line)
				continue
			}
			e := reflect.New(v.Type().Elem()).Elem()
			decode(node.Content[i+1], e, JoinPath(path, node.Content[i].Value), errs)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	default:
		decodeLeaf(node, v, path, errs)
	}
}

// FirstLine returns the line of an earlier key equal to the key at
// m.Content[i] of mapping m, or 0 when it is the first. yaml.v3 checks
// duplicates only when it decodes into maps, so a node walk must do it.
func FirstLine(m *yaml.Node, i int) int {
	for j := 0; j < i; j += 2 {
		if m.Content[j].Value == m.Content[i].Value {
			return m.Content[j].Line
		}
	}
	return 0
}

// needsWalk reports whether values of t contain structs, whose keys must be
// checked one by one.
func needsWalk(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Time]()
}

func decodeStruct(node *yaml.Node, v reflect.Value, path string, errs *Errors) {
	if node.Kind != yaml.MappingNode {
		errs.Addf(path, "must be a mapping of keys, got %s (line %d)", describe(node), node.Line)
		return
	}
	fields := map[string]reflect.Value{}
	collectFields(v, fields)
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i], node.Content[i+1]
		if first := FirstLine(node, i); first != 0 {
			errs.Addf(JoinPath(path, key.Value), "duplicate key (line %d; first on line %d)", key.Line, first)
			continue
		}
		f, ok := fields[key.Value]
		if !ok {
			errs.Addf(JoinPath(path, key.Value), "unknown key (line %d)%s", key.Line, suggest(key.Value, fields))
			continue
		}
		decode(val, f, JoinPath(path, key.Value), errs)
	}
}

// collectFields maps yaml key names to the settable fields of v, descending
// into ",inline" fields.
func collectFields(v reflect.Value, into map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			collectFields(v.Field(i), into)
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		into[name] = v.Field(i)
	}
}

func decodeLeaf(node *yaml.Node, v reflect.Value, path string, errs *Errors) {
	if v.Type() == durationType {
		if node.Kind != yaml.ScalarNode || node.Tag != "!!str" {
			errs.Addf(path, "must be a duration with a unit like \"30s\", got %s (line %d)", describe(node), node.Line)
			return
		}
		d, err := time.ParseDuration(node.Value)
		if err != nil {
			errs.Addf(path, "must be a duration with a unit like \"30s\", got %q (line %d)", node.Value, node.Line)
			return
		}
		v.SetInt(int64(d))
		return
	}
	if v.Kind() == reflect.Bool && (node.Kind != yaml.ScalarNode || node.ShortTag() != "!!bool") {
		// One rule, YAML 1.2's: an unquoted true or false. yaml.v3 would
		// take YAML 1.1's yes/no/on/off into a bool, yet refuse "true".
		errs.Addf(path, "must be true or false (unquoted), got %s (line %d)", describe(node), node.Line)
		return
	}
	tmp := reflect.New(v.Type())
	if err := node.Decode(tmp.Interface()); err != nil {
		errs.Addf(path, "must be %s, got %s (line %d)", typeName(v.Type()), describe(node), node.Line)
		return
	}
	v.Set(tmp.Elem())
}

func describe(node *yaml.Node) string {
	switch node.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", node.Value)
	}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(typeName(t.Elem()), "a ")
	case reflect.Map:
		return "a mapping"
	}
	return t.String()
}

// suggest names a known key that differs from key only in case, the usual
// slip ("denialttl" for "denialTTL").
func suggest(key string, fields map[string]reflect.Value) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("; did you mean %q?", name)
		}
	}
	return ""
}
