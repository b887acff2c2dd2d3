package oauth

import (
	"fmt"
	"os"
)

// CheckPrivate returns an error saying what to do when the file at path,
// which holds a secret (a token or a key), may be read or changed by
// every user of the machine. Group access is allowed: the documented
// deployments grant it on purpose (a Kubernetes fsGroup, a systemd
// DynamicUser reading /etc/popbridge through a group). A file that
// cannot be read is not reported here: using it fails with its own error.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	if m := fi.Mode().Perm(); m&0o007 != 0 {
		return fmt.Errorf("%s holds a secret and every user of this machine may read or change it (mode %04o); run: chmod 600 %s", path, m, path)
	}
	return nil
}
