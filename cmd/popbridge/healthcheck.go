package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// healthcheck asks a running server's /healthz (or /readyz) and exits 0
// when it answers 200, for container health checks.
func (c *cli) healthcheck(ctx context.Context, args []string) error {
	fs := c.flags("healthcheck", "(-config FILE | -url URL) [-ready] [-timeout D]",
		"Ask the running server's operations listener (listen.http) whether it is\n"+
			"alive: exit 0 when GET /healthz (with -ready, /readyz) answers 200,\n"+
			"else 1. With -config, the address is listen.http of FILE (an address for\n"+
			"all interfaces is asked on loopback); only that key is read.")
	path := fs.String("config", "", "configuration `file` (YAML)")
	base := fs.String("url", "", "base `URL` of the listener, e.g. http://127.0.0.1:9110")
	ready := fs.Bool("ready", false, "ask /readyz: 200 only while every POP3 listener is up and not shutting down")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this `duration`")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if (*path == "") == (*base == "") {
		return usageError("give -config or -url")
	}
	target := *base
	if *path != "" {
		addr, err := httpAddr(*path)
		if err != nil {
			return err
		}
		target = "http://" + addr
	}
	target = strings.TrimSuffix(target, "/")
	if *ready {
		target += "/readyz"
	} else {
		target += "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: not answering: %w", target, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", target, resp.Status)
	}
	fmt.Fprintf(c.stdout, "%s: %s\n", target, resp.Status)
	return nil
}

// httpAddr returns the host:port at which to ask the listen.http of the
// configuration file at path, reading nothing else from it.
func httpAddr(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var c struct {
		Listen struct {
			HTTP string `yaml:"http"`
		} `yaml:"listen"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c.Listen.HTTP == "" {
		return "", fmt.Errorf("%s: listen.http is not set, so there is nothing to ask", path)
	}
	host, port, err := net.SplitHostPort(c.Listen.HTTP)
	if err != nil {
		return "", fmt.Errorf("%s: listen.http: %w", path, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}
