package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/popbridge/popbridge/internal/modes"
)

// Backend types.
const (
	TypeMaildir = "maildir"
)

// backendTypes lists the known types, for error messages.
var backendTypes = []string{TypeMaildir, TypePOP3, TypeIMAP, TypeGmail, TypeGraph}

// Backend is an account's storage. Type selects the backend, and the
// field of that type holds its settings; the other fields are nil.
type Backend struct {
	Type    string
	Maildir *MaildirBackend
	POP3    *POP3Backend
	IMAP    *IMAPBackend
	Gmail   *GmailBackend
	Graph   *GraphBackend
}

// MaildirBackend serves a local Maildir.
type MaildirBackend struct {
	// Path is the Maildir (the folder holding cur/ and new/).
	Path string `yaml:"path"`
	// OnDelete is remove (unlink at QUIT) or keep (hide from POP only,
	// remembered in state_dir). Empty means remove.
	OnDelete modes.OnDelete `yaml:"on_delete"`
}

// UnmarshalYAML reads the type key, then decodes the mapping strictly
// into that type's settings: a key the type does not have is an error.
func (b *Backend) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return typeErrorf("line %d: backend must be a mapping with a type key", n.Line)
	}
	*b = Backend{}
	for _, kv := range pairs(n) {
		if kv[0].Value == "type" {
			b.Type = kv[1].Value
		}
	}
	switch b.Type {
	case TypeMaildir:
		b.Maildir = new(MaildirBackend)
		return decodeStrict(n, b.Maildir, b.Type)
	case TypePOP3:
		b.POP3 = new(POP3Backend)
		return decodeStrict(n, b.POP3, b.Type)
	case TypeIMAP:
		b.IMAP = new(IMAPBackend)
		return decodeStrict(n, b.IMAP, b.Type)
	case TypeGmail:
		b.Gmail = new(GmailBackend)
		return decodeStrict(n, b.Gmail, b.Type)
	case TypeGraph:
		b.Graph = new(GraphBackend)
		return decodeStrict(n, b.Graph, b.Type)
	}
	// A missing or unknown type is reported by Validate, with its key.
	return nil
}

// decodeStrict decodes the mapping n into the struct pointed to by v and
// reports keys that v's type does not have (besides "type"). It exists
// because yaml.Node.Decode ignores the decoder's KnownFields setting.
func decodeStrict(n *yaml.Node, v any, typ string) error {
	var errs []string
	known := yamlKeys(reflect.TypeOf(v).Elem())
	for _, kv := range pairs(n) {
		k := kv[0]
		if k.Value != "type" && !known[k.Value] {
			errs = append(errs, fmt.Sprintf("line %d: unknown key %q for backend type %s", k.Line, k.Value, typ))
		}
	}
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return err
		}
		errs = append(errs, te.Errors...)
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// pairs returns the key-value pairs of the mapping n, following merge
// keys ("<<: *anchor"). Merged pairs come first, so that a later pair
// with the same key overrides them, as in decoding.
func pairs(n *yaml.Node) [][2]*yaml.Node {
	return mergedPairs(n, map[*yaml.Node]bool{})
}

// mergedPairs is pairs, skipping the mappings in seen: a mapping merged
// into itself, directly or not, would never end.
func mergedPairs(n *yaml.Node, seen map[*yaml.Node]bool) [][2]*yaml.Node {
	if seen[n] {
		return nil
	}
	seen[n] = true
	defer delete(seen, n)
	var merged, own [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
			own = append(own, [2]*yaml.Node{k, v})
			continue
		}
		sources := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		for _, src := range sources {
			if src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src != nil && src.Kind == yaml.MappingNode {
				merged = append(merged, mergedPairs(src, seen)...)
			}
		}
	}
	return append(merged, own...)
}

// yamlKeys returns the keys named by the yaml tags of struct type t, and
// of the structs it inlines. Backend settings are flat structs with a tag
// on every field.
func yamlKeys(t reflect.Type) map[string]bool {
	keys := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline" && f.Anonymous:
			for k := range yamlKeys(f.Type) {
				keys[k] = true
			}
		case name != "" && name != "-":
			keys[name] = true
		}
	}
	return keys
}

func typeErrorf(format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf(format, args...)}}
}
