// Command popbridge serves mailboxes to POP3 clients.
//
// Usage:
//
//	popbridge serve -config FILE
//	popbridge demo [-dir DIR] [-listen ADDR]
//	popbridge check -config FILE [-offline]
//	popbridge auth ACCOUNT -config FILE [-flow loopback|device] [-port N]
//	popbridge sync ACCOUNT -config FILE
//	popbridge cache stats [-json] (-config FILE | -state DIR)
//	popbridge cache forget (-config FILE | -state DIR) ACCOUNT
//	popbridge cache verify (-config FILE | -state DIR)
//	popbridge state migrate -config FILE [-to postgres|bbolt] [-overwrite]
//	popbridge hash-password [-cost N]
//	popbridge healthcheck (-config FILE | -url URL) [-ready]
//	popbridge version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/popbridge/popbridge/internal/app"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// when empty, the module version from the build info is used.
var version = ""

const usage = `popbridge serves mailboxes to POP3 clients.

Usage:
  popbridge serve -config FILE        run the POP3 server
  popbridge demo [-dir DIR] [-listen ADDR]
                                      serve a sample Maildir, user demo,
                                      password demo; no setup needed
  popbridge check -config FILE [-offline]
                                      validate the configuration, then try
                                      every account's backend (-offline:
                                      only local files, no upstream)
  popbridge cache stats (-config FILE | -state DIR) [-json]
                                      per account: cached messages,
                                      tombstones, bytes
  popbridge cache forget (-config FILE | -state DIR) ACCOUNT
                                      drop everything cached for ACCOUNT
  popbridge cache verify (-config FILE | -state DIR)
                                      read the whole cache file and check it
  popbridge state migrate -config FILE [-to postgres|bbolt] [-overwrite]
                                      copy the state (cache.db, OAuth2
                                      tokens) into PostgreSQL, or back
  popbridge auth ACCOUNT -config FILE [-flow loopback|device] [-port N]
                                      obtain and store the OAuth2 token of an
                                      account with backend.oauth2
  popbridge sync ACCOUNT -config FILE
                                      learn the sizes and UIDLs of a large
                                      mailbox before the first client login
  popbridge hash-password [-cost N]   read a password on standard input,
                                      print its bcrypt hash
  popbridge healthcheck (-config FILE | -url URL) [-ready]
                                      exit 0 if the running server's
                                      /healthz (or /readyz) answers 200
  popbridge version                   print the version

Run "popbridge COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// cli holds the standard streams, so that tests can run commands in
// process.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// onStart, if set, is called with the running server of serve and
	// demo, for tests.
	onStart func(*app.App)
}

// run runs the command in args and returns the exit status: 0 for
// success, 1 for failure, 2 for a usage error. Cancelling ctx stops a
// running server gracefully.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return (&cli{stdin: stdin, stdout: stdout, stderr: stderr}).run(ctx, args)
}

func (c *cli) run(ctx context.Context, args []string) int {
	stderr, stdout := c.stderr, c.stdout
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name, args := args[0], args[1:]
	var err error
	switch name {
	case "serve":
		err = c.serve(ctx, args)
	case "demo":
		err = c.demo(ctx, args)
	case "check":
		err = c.check(ctx, args)
	case "auth":
		err = c.auth(ctx, args)
	case "sync":
		err = c.syncAccount(ctx, args)
	case "cache":
		err = c.cache(args)
	case "state":
		err = c.state(ctx, args)
	case "hash-password":
		err = c.hashPassword(args)
	case "healthcheck":
		err = c.healthcheck(ctx, args)
	case "version", "-version", "--version":
		name = "version"
		err = c.version(args)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "popbridge: unknown command %q\n\n%s", name, usage)
		return 2
	}
	return c.exit(name, err)
}

// Errors that commands return to choose the exit status.
var (
	// errHelp: -h was given and usage printed; exit 0.
	errHelp = errors.New("help requested")
	// errReported: the problem has been printed; exit 1.
	errReported = errors.New("failed")
	// errFlags: the flag package printed the problem and usage; exit 2.
	errFlags = errors.New("bad flags")
)

// usageError is a usage mistake to print with a pointer to -h; exit 2.
type usageError string

func (e usageError) Error() string { return string(e) }

func (c *cli) exit(name string, err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errReported):
		return 1
	case errors.Is(err, errFlags):
		return 2
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "popbridge %s: %s\nRun \"popbridge %s -h\" for usage.\n", name, ue, name)
		return 2
	}
	c.printError(name, err)
	return 1
}

// printError prints err after the command name; an error of several
// lines (such as a list of configuration problems) gets one indented
// line each.
func (c *cli) printError(name string, err error) {
	lines := strings.Split(err.Error(), "\n")
	if len(lines) == 1 {
		fmt.Fprintf(c.stderr, "popbridge %s: %s\n", name, lines[0])
		return
	}
	fmt.Fprintf(c.stderr, "popbridge %s: %d problems:\n", name, len(lines))
	for _, l := range lines {
		fmt.Fprintf(c.stderr, "  %s\n", l)
	}
}

// flags returns a flag set for a command; synopsis and about make its
// usage text.
func (c *cli) flags(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: popbridge %s %s\n\n%s\n", name, synopsis, about)
		if hasFlags(fs) {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses args and refuses positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errFlags
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

func (c *cli) version(args []string) error {
	fs := c.flags("version", "", "Print the version of popbridge.")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "popbridge %s %s %s/%s\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// versionString returns version, else the module version or VCS revision
// from the build info, else "dev".
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}
