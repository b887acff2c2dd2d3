package main

import (
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository's top directory, seen from this package.
const repoRoot = "../.."

// TestDocsExamples runs popbridge check -offline on every file in
// docs/examples. Their absolute paths (/etc/popbridge, /var/lib/popbridge)
// are moved under a temporary directory, which gets a certificate; the
// rest of each file is checked as written.
func TestDocsExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	t.Setenv("BOB_PASSWORD_HASH", testHash(t)) // docs/examples/maildir.yaml
	absPath := regexp.MustCompile(`/(etc|var/lib)/popbridge\b`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			root := t.TempDir()
			src := absPath.ReplaceAllStringFunc(string(must(os.ReadFile(f))), func(p string) string { return root + p })
			tlsDir := filepath.Join(root, "etc", "popbridge", "tls")
			if err := os.MkdirAll(tlsDir, 0o700); err != nil {
				t.Fatal(err)
			}
			writeTestCert(t, tlsDir)
			for from, to := range map[string]string{"cert.pem": "fullchain.pem", "key.pem": "privkey.pem"} {
				if err := os.Rename(filepath.Join(tlsDir, from), filepath.Join(tlsDir, to)); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(root, filepath.Base(f))
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runCmd(t, "", "check", "-offline", "-config", path)
			if r.code != 0 || r.stderr != "" || strings.Contains(r.stdout, "FAIL") {
				t.Errorf("check -offline %s: exit %d\n%s%s", f, r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestDocsLinks resolves every relative link of README.md and docs/*.md:
// the file must exist, and an anchor must name a heading of it, by
// GitHub's rules.
func TestDocsLinks(t *testing.T) {
	docs, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{filepath.Join(repoRoot, "README.md")}, docs...)
	links := 0
	for _, doc := range docs {
		text := string(must(os.ReadFile(doc)))
		for _, l := range mdLinks(text) {
			target := l.target
			if regexp.MustCompile(`^[a-z][a-z0-9+.-]*:`).MatchString(target) {
				continue // https:, mailto:
			}
			links++
			file, anchor, _ := strings.Cut(target, "#")
			resolved := doc
			if file != "" {
				resolved = filepath.Join(filepath.Dir(doc), filepath.FromSlash(file))
			}
			rel := strings.TrimPrefix(doc, repoRoot+"/")
			if _, err := os.Stat(resolved); err != nil {
				t.Errorf("%s:%d: link %q: %s does not exist", rel, l.line, target, file)
				continue
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(resolved, ".md") {
				t.Errorf("%s:%d: link %q: an anchor into a file that is not Markdown", rel, l.line, target)
				continue
			}
			if !headingAnchors(string(must(os.ReadFile(resolved))))[anchor] {
				t.Errorf("%s:%d: link %q: no heading with the anchor #%s", rel, l.line, target, anchor)
			}
		}
	}
	if links < 20 {
		t.Errorf("only %d relative links found; the parser is broken", links)
	}
}

type mdLink struct {
	target string
	line   int
}

var (
	inlineLink = regexp.MustCompile(`\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	refLink    = regexp.MustCompile(`^\s*\[[^\]]+\]:\s*(\S+)`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
)

// mdLinks returns the inline and reference link targets of a Markdown
// text, outside code blocks and code spans.
func mdLinks(text string) []mdLink {
	var out []mdLink
	for i, line := range outsideFences(text) {
		line = codeSpan.ReplaceAllString(line, "``")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			out = append(out, mdLink{strings.Trim(m[1], "<>"), i + 1})
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			out = append(out, mdLink{m[1], i + 1})
		}
	}
	return out
}

// outsideFences yields the index and text of each line of a Markdown
// text that is not in a fenced code block (``` or ~~~).
func outsideFences(text string) iter.Seq2[int, string] {
	return func(yield func(int, string) bool) {
		fence := ""
		for i, line := range strings.Split(text, "\n") {
			trimmed := strings.TrimSpace(line)
			if fence != "" {
				if strings.HasPrefix(trimmed, fence) {
					fence = ""
				}
				continue
			}
			if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
				fence = trimmed[:3]
				continue
			}
			if !yield(i, line) {
				return
			}
		}
	}
}

// headingAnchors returns the anchors GitHub gives the headings of a
// Markdown text: the heading's text lower-cased, without punctuation
// other than "-" and "_", spaces turned into "-", and "-1", "-2", ...
// added to repeats.
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range outsideFences(text) {
		m := regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`).FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := githubSlug(m[1])
		if n := seen[slug]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

var mdMarkup = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)

func githubSlug(heading string) string {
	heading = mdMarkup.ReplaceAllString(heading, "$1") // a link's text stays
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestGithubSlug(t *testing.T) {
	for in, want := range map[string]string{
		"The pop3 backend: relaying an upstream POP3 server": "the-pop3-backend-relaying-an-upstream-pop3-server",
		"1a. Google: a \"Desktop app\" OAuth client":         "1a-google-a-desktop-app-oauth-client",
		"Running `popbridge auth`":                           "running-popbridge-auth",
		"State and cache":                                    "state-and-cache",
		"snake_case & more":                                  "snake_case--more",
		"A [link](x.md) here":                                "a-link-here",
	} {
		if got := githubSlug(in); got != want {
			t.Errorf("githubSlug(%q) = %q, want %q", in, got, want)
		}
	}
	got := headingAnchors("# A\n## A\n```\n# A\n```\n### A\n")
	for _, want := range []string{"a", "a-1", "a-2"} {
		if !got[want] {
			t.Errorf("anchors %v lack %s", got, want)
		}
	}
	if len(got) != 3 {
		t.Errorf("anchors %v, want 3", got)
	}
}
