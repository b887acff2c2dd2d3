package testcorpus_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/testcorpus"
	"github.com/popbridge/popbridge/proxy"
)

func TestCorpus(t *testing.T) {
	dir := t.TempDir()
	msgs, err := testcorpus.WriteCorpus(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := testcorpus.WriteCorpus(dir)
	if err != nil {
		t.Fatalf("second corpus in the same Maildir: %v", err)
	}
	names := map[string]bool{}
	uniques := map[string]bool{}
	for _, m := range append(msgs, again...) {
		if uniques[m.Unique] {
			t.Errorf("unique name %q used twice", m.Unique)
		}
		uniques[m.Unique] = true
		names[m.Name] = true
		if !proxy.ValidUID(m.Unique) {
			t.Errorf("unique name %q is not a valid UIDL", m.Unique)
		}
		data, err := os.ReadFile(m.Path)
		if err != nil || !bytes.Equal(data, m.Data) {
			t.Errorf("%s: file %s does not hold Data (%v)", m.Name, m.Path, err)
		}
		if base := filepath.Base(m.Path); !strings.HasPrefix(base, m.Unique) {
			t.Errorf("%s: file %s is not named after %s", m.Name, base, m.Unique)
		}
	}
	for _, want := range []string{"dot-lines", "lone-dot-body", "no-final-newline", "utf8-8bit", "long-line",
		"empty-body", "headers-only", "big-5mb", "crlf-stored", "empty-file"} {
		if !names[want] {
			t.Errorf("corpus lacks %q", want)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ not empty: %d files", len(tmp))
	}
	for _, m := range msgs {
		switch m.Name {
		case "big-5mb":
			if len(m.Data) != 5<<20 {
				t.Errorf("big message is %d octets", len(m.Data))
			}
		case "long-line":
			longest := 0
			for _, l := range bytes.Split(m.Data, []byte("\n")) {
				longest = max(longest, len(l))
			}
			if longest < 3000 {
				t.Errorf("longest line %d octets", longest)
			}
		case "no-final-newline", "no-final-newline-dot", "headers-only":
			if m.Name != "headers-only" && bytes.HasSuffix(m.Data, []byte("\n")) {
				t.Errorf("%s ends with a newline", m.Name)
			}
			if m.Name == "headers-only" && bytes.Contains(m.Data, []byte("\n\n")) {
				t.Errorf("headers-only has a blank line")
			}
		case "crlf-stored":
			if bytes.Count(m.Data, []byte("\r\n")) != bytes.Count(m.Data, []byte("\n")) {
				t.Error("crlf-stored has bare LFs")
			}
		}
	}
}
