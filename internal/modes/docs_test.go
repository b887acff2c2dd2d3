package modes_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/popbridge/popbridge/internal/modes"
)

// TestDocumented checks that README.md or docs/*.md names every word of
// every list, written `word`: a word added here is documented too.
func TestDocumented(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var docs strings.Builder
	for _, f := range append(files, filepath.Join("..", "..", "README.md")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(b)
	}
	words := slices.Concat(
		wordsOf(modes.MaildirOnDelete), wordsOf(modes.POP3OnDelete), wordsOf(modes.IMAPOnDelete), wordsOf(modes.GmailOnDelete),
		wordsOf(modes.GraphOnDelete),
		wordsOf(modes.TLSModes), wordsOf(modes.IMAPAuth), wordsOf(modes.POP3Auth), wordsOf(modes.XOAUTH2Forms),
		wordsOf(modes.Providers), wordsOf(modes.SendTypes), wordsOf(modes.SMTPTLSModes), wordsOf(modes.SMTPAuth))
	if len(words) < 20 {
		t.Fatalf("only %d words: %q", len(words), words)
	}
	for _, w := range words {
		if !strings.Contains(docs.String(), "`"+w+"`") {
			t.Errorf("`%s` is in no document", w)
		}
	}
}

func wordsOf[T ~string](l modes.List[T]) []string {
	var words []string
	for _, w := range l {
		words = append(words, string(w))
	}
	return words
}
