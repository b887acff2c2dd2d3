// Command fakegmail runs the in-repo fake Gmail API (backends/gmail/
// gmailtest) and a fake OAuth2 token server (backends/oauth/oauthtest)
// on one local port, so that popbridge can run entirely against a
// local fake. It prints the settings for a popbridge config and, on
// exit (Ctrl-C), the API calls and quota units used.
//
// Usage:
//
//	go run ./cmd/fakegmail [-listen 127.0.0.1:8085] [-messages 20]
//	        [-maildir DIR] [-latency 50ms] [-email user@example.com]
//	        [-full-scope=true]
//
// The mailbox holds -messages generated messages in INBOX, or, with
// -maildir, the files of DIR/cur and DIR/new (new and cur without the
// S flag are UNREAD). The refresh token is fixed; access tokens are
// those the token server issued since it started.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/popbridge/popbridge/backends/gmail/gmailtest"
	"github.com/popbridge/popbridge/backends/oauth/oauthtest"
)

const refreshToken = "rt-fakegmail"

func main() {
	listen := flag.String("listen", "127.0.0.1:8085", "address to serve the API and the token endpoint on")
	n := flag.Int("messages", 20, "number of generated messages (without -maildir)")
	maildir := flag.String("maildir", "", "load the messages of this Maildir instead")
	latency := flag.Duration("latency", 0, "latency added to every API request")
	email := flag.String("email", "user@example.com", "the account's address")
	full := flag.Bool("full-scope", true, "allow messages.delete/batchDelete (else 403, as with gmail.modify)")
	flag.Parse()

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	auth := oauthtest.New()
	defer auth.Close()
	auth.AddRefreshToken(refreshToken)
	g := gmailtest.New(gmailtest.WithEmail(*email), gmailtest.WithClock(time.Now().Add(-time.Duration(*n+1)*time.Minute)))
	defer g.Close()
	g.AllowDelete = *full
	g.ValidToken = auth.ValidAccess
	g.Latency = *latency

	count := 0
	if *maildir != "" {
		if count, err = loadMaildir(g, *maildir); err != nil {
			log.Fatal(err)
		}
	} else {
		for i := 1; i <= *n; i++ {
			id := g.Add(generate(i, *email), "INBOX", "UNREAD")
			g.SetUnpadded(id, i%5 == 0) // some raw without base64 padding
		}
		count = *n
	}

	target, _ := url.Parse(auth.URL)
	mux := http.NewServeMux()
	mux.Handle("/oauth/", http.StripPrefix("/oauth", httputil.NewSingleHostReverseProxy(target)))
	mux.Handle("/", g)
	go func() { log.Fatal(http.Serve(l, mux)) }()

	base := "http://" + l.Addr().String()
	fmt.Printf("# fake Gmail for %s: %d messages, historyId %d\n", *email, count, g.HistoryID())
	fmt.Printf("api_endpoint: %s/\n", base)
	fmt.Printf("auth_url: %s/oauth/authorize\n", base)
	fmt.Printf("token_url: %s/oauth/token\n", base)
	fmt.Printf("client_id: %s\n", auth.ClientID)
	fmt.Printf("refresh_token: %s\n", refreshToken)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	calls := g.Calls()
	keys := make([]string, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(os.Stderr, "%-22s %d\n", k, calls[k])
	}
	fmt.Fprintf(os.Stderr, "quota units: %d, peak concurrency: %d\n", g.Units(), g.MaxInFlight())
}

func generate(i int, to string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\nTo: %s\r\nSubject: Test message %d\r\n", i, i%7, to, i)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <fake-%d@example.org>\r\n\r\n", time.Now().Format(time.RFC1123Z), i)
	for j := range 1 + i%13*7 {
		fmt.Fprintf(&b, "Line %d of message %d.\r\n", j, i)
	}
	return []byte(b.String())
}

// loadMaildir adds the files of dir/cur and dir/new, oldest first, with
// their modification time as internalDate.
func loadMaildir(g *gmailtest.Server, dir string) (int, error) {
	type file struct {
		path   string
		mod    time.Time
		unread bool
	}
	var files []file
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return 0, err
		}
		for _, e := range ents {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			_, flags, _ := strings.Cut(e.Name(), ":2,")
			files = append(files, file{filepath.Join(dir, sub, e.Name()), info.ModTime(), sub == "new" || !strings.Contains(flags, "S")})
		}
	}
	slices.SortFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	for _, f := range files {
		raw, err := os.ReadFile(f.path)
		if err != nil {
			return 0, err
		}
		labels := []string{"INBOX"}
		if f.unread {
			labels = append(labels, "UNREAD")
		}
		g.AddAt(raw, f.mod, labels...)
	}
	return len(files), nil
}
