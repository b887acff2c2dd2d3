package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"
)

// defaultCost is the bcrypt cost of new hashes: about a quarter of a
// second on a current CPU. The account router caches successful logins,
// so a client pays it about once per cache period, not once per poll.
const defaultCost = 12

// maxPasswordLine bounds what hash-password reads from a pipe.
const maxPasswordLine = 4096

func (c *cli) hashPassword(args []string) error {
	fs := c.flags("hash-password", "[-cost N]", "Read a password from standard input (without echo on a terminal) and print\n"+
		"its bcrypt hash, for password_hash in the configuration. From a pipe, the\n"+
		"first line is the password.")
	cost := fs.Int("cost", defaultCost, fmt.Sprintf("bcrypt `cost`, %d to %d", bcrypt.MinCost, bcrypt.MaxCost))
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *cost < bcrypt.MinCost || *cost > bcrypt.MaxCost {
		return usageError(fmt.Sprintf("-cost must be from %d to %d", bcrypt.MinCost, bcrypt.MaxCost))
	}
	pass, err := c.readPassword()
	if err != nil {
		return err
	}
	switch {
	case pass == "":
		return errors.New("empty password")
	case len(pass) > 72:
		return errors.New("password longer than 72 bytes; bcrypt would ignore the rest")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), *cost)
	if err != nil {
		return fmt.Errorf("hashing: %w", err)
	}
	fmt.Fprintf(c.stdout, "%s\n", hash)
	return nil
}

// readPassword reads the password: twice without echo from a terminal,
// else the first line of standard input.
func (c *cli) readPassword() (string, error) {
	if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		read := func(prompt string) (string, error) {
			fmt.Fprint(c.stderr, prompt)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(c.stderr)
			if err != nil {
				return "", fmt.Errorf("reading password: %w", err)
			}
			return string(b), nil
		}
		p1, err := read("Password: ")
		if err != nil {
			return "", err
		}
		p2, err := read("Repeat password: ")
		if err != nil {
			return "", err
		}
		if p1 != p2 {
			return "", errors.New("the passwords differ")
		}
		return p1, nil
	}
	line, err := bufio.NewReader(io.LimitReader(c.stdin, maxPasswordLine)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading password: %w", err)
	}
	if !strings.HasSuffix(line, "\n") && len(line) == maxPasswordLine {
		return "", errors.New("password line too long")
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}
