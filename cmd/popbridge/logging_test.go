package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/config"
)

// TestLogTimeMillis: JSON timestamps have millisecond resolution.
func TestLogTimeMillis(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, config.Log{Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("x")
	var e struct{ Time string }
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`).MatchString(e.Time) {
		t.Errorf("time %q, want RFC 3339 with milliseconds", e.Time)
	}
}

// TestDurationFieldNames: every logged duration says its unit in its
// field name. zerolog's Dur writes a bare number whose unit is a global
// setting, so it must not be used with a name that lacks one.
func TestDurationFieldNames(t *testing.T) {
	dur := regexp.MustCompile(`\bDur\("([^"]*)"`)
	ms := regexp.MustCompile(`\b(?:Int64|Float64|Int)\("([^"]*)", [^"]*?Milliseconds\(\)`)
	sec := regexp.MustCompile(`\b(?:Int64|Float64|Int)\("([^"]*)", [^"]*?\.Seconds\(\)`)
	n := 0
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			for _, m := range dur.FindAllStringSubmatch(line, -1) {
				t.Errorf("%s:%d: Dur(%q): log the duration with its unit in the name, e.g. Int64(%q, d.Milliseconds())", path, i+1, m[1], m[1]+"_ms")
			}
			for _, m := range ms.FindAllStringSubmatch(line, -1) {
				n++
				if !strings.HasSuffix(m[1], "_ms") {
					t.Errorf("%s:%d: field %q holds milliseconds: name it ..._ms", path, i+1, m[1])
				}
			}
			for _, m := range sec.FindAllStringSubmatch(line, -1) {
				n++
				if !strings.HasSuffix(m[1], "_s") && !strings.HasSuffix(m[1], "_seconds") {
					t.Errorf("%s:%d: field %q holds seconds: name it ..._s", path, i+1, m[1])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no duration field found: the scan is broken")
	}
}
