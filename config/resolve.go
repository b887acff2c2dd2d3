package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// resolver fills in secrets and makes paths absolute, collecting problems
// with their key paths. Keys that failed are remembered so that Validate
// does not report them again.
type resolver struct {
	dir    string
	errs   []error
	failed map[string]bool
}

func (r *resolver) errorf(key, format string, args ...any) {
	r.errs = append(r.errs, &Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	r.failed[key] = true
}

func (r *resolver) resolve(c *Config) {
	r.stateDir(c)
	r.secret("http.status_token", &c.HTTP.StatusToken, "http.status_token_file", &c.HTTP.StatusTokenFile)
	r.resolveAdmin(c)
	if c.TLS != nil {
		r.path(&c.TLS.CertFile)
		r.path(&c.TLS.KeyFile)
	}
	for i := range c.Accounts {
		a := &c.Accounts[i]
		key := fmt.Sprintf("accounts[%d]", i)
		r.secret(key+".password_hash", &a.PasswordHash, key+".password_hash_file", &a.PasswordHashFile)
		if m := a.Backend.Maildir; m != nil {
			r.path(&m.Path)
		}
		if pb := a.Backend.POP3; pb != nil {
			pb.resolve(r, key+".backend")
		}
		if ib := a.Backend.IMAP; ib != nil {
			ib.resolve(r, key+".backend")
		}
		if gb := a.Backend.Gmail; gb != nil {
			gb.resolve(r, key+".backend")
		}
		if a.Send != nil {
			a.Send.resolve(r, key+".send")
		}
		if gb := a.Backend.Graph; gb != nil {
			gb.resolve(r, key+".backend")
		}
	}
}

// stateDir fills in the default state directory and resolves it.
func (r *resolver) stateDir(c *Config) {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	r.path(&c.StateDir)
	r.path(&c.State.DSNFile)
}

// path makes a relative path relative to the config file's directory.
func (r *resolver) path(p *string) {
	if *p != "" && !filepath.IsAbs(*p) {
		*p = filepath.Join(r.dir, *p)
	}
}

// secret sets *v from the file named by *file, or expands the ${ENV_VAR}
// references in *v. Setting both is an error.
func (r *resolver) secret(key string, v *string, fileKey string, file *string) {
	if *file == "" {
		if s, err := expandEnv(*v); err != nil {
			r.errorf(key, "%v", err)
		} else {
			*v = s
		}
		return
	}
	if *v != "" {
		r.errorf(key, "set either %s or %s, not both", lastKey(key), lastKey(fileKey))
		r.failed[fileKey] = true
		return
	}
	r.path(file)
	data, err := os.ReadFile(*file)
	if err != nil {
		r.errorf(fileKey, "%v", err)
		r.failed[key] = true
		return
	}
	*v = strings.TrimRight(string(data), "\r\n")
	if *v == "" {
		r.errorf(fileKey, "%s is empty", *file)
		r.failed[key] = true
	}
}

func lastKey(key string) string {
	return key[strings.LastIndexByte(key, '.')+1:]
}

// expandEnv replaces each ${NAME} in s with the value of the environment
// variable NAME. Only the braced form is expanded, so a bcrypt hash
// ("$2a$12$...") is left alone. An unset variable is an error; a set but
// empty one expands to "".
func expandEnv(s string) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i+2:]
		j := strings.IndexByte(s, '}')
		if j < 0 {
			return "", fmt.Errorf("unterminated ${ (want ${NAME})")
		}
		name := s[:j]
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment variable name %q", name)
		}
		val, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		b.WriteString(val)
		s = s[j+1:]
	}
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
