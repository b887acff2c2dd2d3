package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Problem is one problem in a configuration file, in plain words.
type Problem struct {
	// File and Line locate the problem; empty and 0 when unknown (Line
	// is 0 in a file without content).
	File string
	Line int
	// Key is the key path, e.g. accounts[0].backend.path; empty for the
	// file as a whole.
	Key string
	Msg string
}

// Error returns "file:line: key: message", leaving out what is unknown.
func (p *Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// document is what decode learnt from the YAML tree: where each key is,
// and the problems of shape (unknown keys, wrong types).
type document struct {
	file  string
	lines map[string]int // key path -> line
	probs []*Problem
	// failed are the key paths with a problem of shape, so that the
	// problems of value that follow from them are not reported too.
	failed map[string]bool
	// line of each problem, to tell which of yaml's own errors the walk
	// already reported.
	problemLines map[int]bool
	// incomplete: decoding stopped early, so the values cannot be checked.
	incomplete bool
	walking    map[*yaml.Node]bool // the nodes being walked, for enter
	// steps counts the nodes visited; aliases of aliases can make a small
	// file expand beyond any memory ("billion laughs").
	steps int
}

// maxSteps bounds the nodes visited in one file, aliases expanded: far
// above a configuration of thousands of accounts.
const maxSteps = 200_000

// step counts one node visited and reports false once the file has
// expanded beyond maxSteps, reporting that once.
func (d *document) step(n *yaml.Node) bool {
	d.steps++
	if d.steps == maxSteps+1 {
		d.probs = append(d.probs, &Problem{File: d.file, Line: n.Line,
			Msg: fmt.Sprintf("the aliases (*name) expand the file to more than %d values; use fewer aliases of aliases", maxSteps)})
		d.failed[""] = true
	}
	return d.steps <= maxSteps
}

// place sets p's file and the line of its key, or of the nearest key
// above it that the file has: for a top-level key, the first line of the
// file's content.
func (d *document) place(p *Problem) *Problem {
	p.File = d.file
	for k := p.Key; ; k = parentKey(k) {
		if l, ok := d.lines[k]; ok {
			p.Line = l
			break
		}
		if k == "" {
			break
		}
	}
	return p
}

// parentKey returns the key path above k: accounts[0].backend for
// accounts[0].backend.path, accounts for accounts[0], "" for listen.
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

// related reports whether one of the key paths a and b is, or is above,
// the other ("" is the whole file, above every key).
func related(a, b string) bool {
	under := func(x, y string) bool { // x above y
		return strings.HasPrefix(y, x+".") || strings.HasPrefix(y, x+"[")
	}
	return a == b || a == "" || b == "" || under(a, b) || under(b, a)
}

// shadowed reports whether a problem at key follows from a problem of
// shape already reported.
func (d *document) shadowed(key string) bool {
	for f := range d.failed {
		if related(f, key) {
			return true
		}
	}
	return false
}

func (d *document) add(n *yaml.Node, key, format string, args ...any) {
	d.probs = append(d.probs, &Problem{File: d.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
	d.problemLines[n.Line] = true
	d.failed[key] = true
}

// readDocument parses data into a YAML tree and walks it against the
// Config type. A syntax error is returned as the only problem.
func readDocument(file string, data []byte) (*document, error) {
	d := &document{file: file, lines: map[string]int{}, failed: map[string]bool{}, problemLines: map[int]bool{},
		walking: map[*yaml.Node]bool{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxProblems(file, data, err)
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		n := root.Content[0]
		if n.Line > 0 {
			d.lines[""] = n.Line
		}
		d.recordLines(n, "")
		d.walk(n, reflect.TypeFor[Config](), "")
	}
	return d, nil
}

// enter marks the anchored node n as being walked through an alias, and
// reports false if it already is: an alias inside its own anchor's value,
// which would never end.
func (d *document) enter(n *yaml.Node) bool {
	if d.walking[n] {
		return false
	}
	d.walking[n] = true
	return true
}

// recordLines notes the line of every key path under n.
func (d *document) recordLines(n *yaml.Node, key string) {
	if !d.step(n) {
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		if !d.enter(n.Alias) {
			return
		}
		defer delete(d.walking, n.Alias)
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		for _, kv := range pairs(n) {
			k := joinKey(key, kv[0].Value)
			if _, seen := d.lines[k]; !seen || kv[0].Line > 0 {
				d.lines[k] = kv[0].Line
			}
			d.recordLines(kv[1], k)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			k := fmt.Sprintf("%s[%d]", key, i)
			d.lines[k] = c.Line
			d.recordLines(c, k)
		}
	}
}

func joinKey(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

var (
	backendType   = reflect.TypeFor[Backend]()
	cleartextType = reflect.TypeFor[CleartextAuth]()
	windowType    = reflect.TypeFor[GmailWindow]()
	oauth2Type    = reflect.TypeFor[OAuth2]()
	unmarshaler   = reflect.TypeFor[yaml.Unmarshaler]()
)

// backendSettings maps each backend type to its settings struct.
var backendSettings = map[string]reflect.Type{
	TypeMaildir: reflect.TypeFor[MaildirBackend](),
	TypePOP3:    reflect.TypeFor[POP3Backend](),
	TypeIMAP:    reflect.TypeFor[IMAPBackend](),
	TypeGmail:   reflect.TypeFor[GmailBackend](),
	TypeGraph:   reflect.TypeFor[GraphBackend](),
}

// walk checks that the node n at key fits type t, and reports each
// unknown key and each value of the wrong kind.
func (d *document) walk(n *yaml.Node, t reflect.Type, key string) {
	if !d.step(n) {
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		if !d.enter(n.Alias) {
			d.add(n, key, "holds itself (an alias inside its own anchor)")
			return
		}
		defer delete(d.walking, n.Alias)
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value is the zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case backendType:
		d.walkBackend(n, key)
		return
	case cleartextType:
		switch n.Kind {
		case yaml.ScalarNode:
		case yaml.SequenceNode:
			d.walk(n, reflect.TypeFor[[]string](), key)
		default:
			d.add(n, key, "must be never, loopback, always or a list of networks, not %s", describe(n))
		}
		return
	case windowType:
		switch {
		case n.Kind == yaml.MappingNode:
			d.mapping(n, t, key, " in window", nil)
		case n.Kind != yaml.ScalarNode || n.Value != "all" && n.Value != "":
			d.add(n, key, "must be %s, not %s", windowForms, describe(n))
		}
		return
	case reflect.TypeFor[time.Duration]():
		var v time.Duration
		if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil {
			d.add(n, key, "must be a duration such as 30s or 2m, not %s", describe(n))
		}
		return
	}
	if t != oauth2Type && reflect.PointerTo(t).Implements(unmarshaler) {
		return // a type with its own rules; decoding reports its problems
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.add(n, key, "must be a mapping (indented key: value lines), not %s", describe(n))
			return
		}
		d.mapping(n, t, key, "", nil)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(n, key, "must be a list, not %s (one entry is written [%s])", describe(n), n.Value)
			return
		}
		for i, c := range n.Content {
			d.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", key, i))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.add(n, key, "must be a single value, not %s", describe(n))
		}
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.add(n, key, "must be true or false, not %s", describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(reflect.New(t).Interface()) != nil {
			d.add(n, key, "must be a whole number, not %s", describe(n))
		}
	}
}

// walkBackend checks a backend mapping against the settings of its type.
func (d *document) walkBackend(n *yaml.Node, key string) {
	if n.Kind != yaml.MappingNode {
		d.add(n, key, "must be a mapping with a type key, not %s (e.g. {type: maildir, path: /var/mail/alice})", describe(n))
		return
	}
	typ := ""
	for _, kv := range pairs(n) {
		if kv[0].Value == "type" {
			typ = kv[1].Value
		}
	}
	if t, ok := backendSettings[typ]; ok {
		d.mapping(n, t, key, " for backend type "+typ, []string{"type"})
		return
	}
	if typ != "" {
		return // Validate names the unknown type
	}
	// No type: only misspelt keys can be told, against every type's.
	all := map[string]bool{"type": true}
	for _, t := range backendSettings {
		for k := range yamlFields(t) {
			all[k] = true
		}
	}
	for _, kv := range pairs(n) {
		if !all[kv[0].Value] {
			d.unknown(kv[0], key, "", slices.Collect(mapKeys(all)))
		}
	}
}

// mapping checks the keys of the mapping n against the fields of struct
// t (and extra keys), and walks their values.
func (d *document) mapping(n *yaml.Node, t reflect.Type, key, where string, extra []string) {
	fields := yamlFields(t)
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if l, dup := first[k.Value]; dup {
			d.add(k, joinKey(key, k.Value), "set twice (first at line %d); keep one", l)
		} else {
			first[k.Value] = k.Line
		}
	}
	for _, kv := range pairs(n) {
		k := kv[0]
		if slices.Contains(extra, k.Value) {
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			d.unknown(k, key, where, append(slices.Collect(mapKeys(fields)), extra...))
			continue
		}
		d.walk(kv[1], ft, joinKey(key, k.Value))
	}
}

// unknown reports the key node k, unknown under parent, with the known
// key it most likely misspells.
func (d *document) unknown(k *yaml.Node, parent, where string, known []string) {
	msg := fmt.Sprintf("unknown key %q%s", k.Value, where)
	if s := closest(k.Value, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
		d.failed[joinKey(parent, s)] = true // its "must be set" follows from this
	}
	d.probs = append(d.probs, &Problem{File: d.file, Line: k.Line, Key: parent, Msg: msg})
	d.problemLines[k.Line] = true
}

// yamlFields maps the yaml keys of struct t, and of the structs it
// inlines, to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline" && f.Anonymous:
			for k, ft := range yamlFields(f.Type) {
				out[k] = ft
			}
		case name == "-":
		case name != "":
			out[name] = f.Type
		default:
			out[strings.ToLower(f.Name)] = f.Type // yaml's default name
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// closest returns the known key nearest to s, if it is near enough to
// be a misspelling (an edit distance of at most 2, or 1 for short keys),
// or the key s is with its words in another order or joined differently.
func closest(s string, known []string) string {
	slices.Sort(known)
	best, bestDist := "", 3
	if len(s) <= 4 {
		bestDist = 2
	}
	norm := func(x string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(x))
	}
	for _, k := range known {
		if norm(k) == norm(s) {
			return k
		}
		if dist := editDistance(strings.ToLower(s), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the Damerau-Levenshtein distance (optimal string
// alignment) of a and b, counting a swap of neighbours as one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// describe names a YAML value for a message.
func describe(n *yaml.Node) string {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	switch n.ShortTag() {
	case "!!str", "!!binary", "!!timestamp":
		return strconv.Quote(n.Value)
	case "!!null":
		return "empty"
	}
	return n.Value
}

// syntaxProblems describes a YAML syntax error in plain words. A tab in
// the indentation is named as such on every line that has one.
func syntaxProblems(file string, data []byte, err error) error {
	var errs []error
	for i, line := range strings.Split(string(data), "\n") {
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.Contains(indent, "\t") && strings.TrimSpace(line) != "" {
			errs = append(errs, &Problem{File: file, Line: i + 1,
				Msg: "a tab in the indentation; YAML indents with spaces only, so replace the tab with spaces"})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if l := firstBadLine(data); l > 0 {
		line = l
	}
	return &Problem{File: file, Line: line, Msg: plainSyntax(msg)}
}

// firstBadLine returns the number of the line at which the file stops
// being valid YAML, or 0: yaml's own line numbers are off by one for some
// errors and name the start of the enclosing block for others. Every
// prefix of the file that holds the bad line fails to parse, so the line
// is found by bisection after the last prefix that parses (a prefix may
// also fail earlier, inside a quoted value or [...] that spans lines).
func firstBadLine(data []byte) int {
	lines := strings.SplitAfter(string(data), "\n")
	var n yaml.Node
	fails := func(k int) bool {
		return yaml.Unmarshal([]byte(strings.Join(lines[:k], "")), &n) != nil
	}
	hi := len(lines)
	if !fails(hi) {
		return 0 // an error found by decoding, not by parsing
	}
	lo := 0
	for step := 1; ; step *= 2 {
		k := len(lines) - step
		if k <= 0 {
			break
		}
		if !fails(k) {
			lo = k
			break
		}
		hi = k
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// plainSyntax rewords the YAML parser's messages.
func plainSyntax(msg string) string {
	switch msg {
	case "did not find expected key":
		return "this line does not line up with the keys above it (check the indentation)"
	case "mapping values are not allowed in this context":
		return `a "key: value" where none can be (check the indentation, or quote a value that holds ": ")`
	case "did not find expected node content":
		return "a value is missing here, or a [ or { is not closed"
	case "found unexpected end of stream":
		return "the file ends inside a quoted value or a [ or {"
	case "did not find expected ',' or '}'":
		return "a { is not closed, or a comma is missing between its entries"
	case "did not find expected ',' or ']'":
		return "a [ is not closed, or a comma is missing between its entries"
	case "did not find expected '-' indicator":
		return `a list entry does not line up with the "- " entries above it (check the indentation)`
	case "found character that cannot start any token":
		return "a value cannot start with this character; put the value in quotes"
	}
	if m := selfAnchorRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("the anchor &%s holds an alias to itself (*%s), which never ends", m[1], m[1])
	}
	return "not valid YAML: " + msg
}

var (
	lineRE       = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE    = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	typeRE       = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
	dupRE        = regexp.MustCompile(`^mapping key "(.*)" already defined at line (\d+)$`)
	selfAnchorRE = regexp.MustCompile(`^anchor '(.*)' value contains itself$`)
)

// decodeProblems turns the errors of yaml's decoder into problems, for
// the lines the walk has not already reported.
func (d *document) decodeProblems(err error) []*Problem {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []*Problem{{File: d.file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var out []*Problem
	for _, msg := range te.Errors {
		p := &Problem{File: d.file, Msg: msg}
		if m := lineRE.FindStringSubmatch(msg); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.Msg = m[2]
		}
		if dupRE.MatchString(p.Msg) {
			d.incomplete = true // yaml stops decoding there
		}
		if d.problemLines[p.Line] {
			continue
		}
		if m := unknownRE.FindStringSubmatch(p.Msg); m != nil {
			p.Msg = fmt.Sprintf("unknown key %q", m[1])
		} else if m := dupRE.FindStringSubmatch(p.Msg); m != nil {
			p.Msg = fmt.Sprintf("%q is set twice (first at line %s); keep one", m[1], m[2])
		} else if m := typeRE.FindStringSubmatch(p.Msg); m != nil {
			p.Msg = fmt.Sprintf("must be %s, not %s", plainType(m[3]), plainValue(m[1], m[2]))
		}
		out = append(out, p)
	}
	return out
}

// plainType names a Go type of a yaml message in words.
func plainType(t string) string {
	switch {
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "a whole number"
	case t == "string" || t == "config.Duration" || t == "config.ByteSize":
		return "a single value"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return "a mapping (indented key: value lines)"
}

func plainValue(tag, value string) string {
	switch tag {
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!str":
		return strconv.Quote(value)
	}
	return value
}
