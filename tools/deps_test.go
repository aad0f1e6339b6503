// Package tools holds tests of the repository's shell scripts.
package tools

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeSystem puts stand-ins for apt-get, dpkg-query, id and go first on
// PATH: dpkg-query reports the packages listed in dir/installed, apt-get
// logs its arguments to dir/apt.log, fails with apt's lock error while
// dir/lock-busy holds a positive count (decrementing it), and "installs"
// its package arguments.
func fakeSystem(t *testing.T, lockBusy int) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	scripts := map[string]string{
		"apt-get": `#!/usr/bin/env bash
echo "$*" >>"$FAKE/apt.log"
busy=$(cat "$FAKE/lock-busy")
if ((busy > 0)); then
  echo $((busy - 1)) >"$FAKE/lock-busy"
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
  exit 100
fi
if [[ " $* " == *" install "* ]]; then
  for a in "$@"; do [[ $a == -* || $a == install || $a == *=* ]] || { echo "Setting up $a (9.9-test) ..."; echo "$a" >>"$FAKE/installed"; }; done
fi
`,
		"dpkg-query": `#!/usr/bin/env bash
fmt=$2; shift 2
for p in "$@"; do
  grep -qx "$p" "$FAKE/installed" 2>/dev/null || exit 1
  if [[ $fmt == *Status* ]]; then printf 'install ok installed'; else echo "  $p 9.9-test"; fi
done
`,
		"id": "#!/bin/sh\necho 0\n",
		"go": "#!/bin/sh\necho go1.26.0\n",
	}
	for name, body := range scripts {
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lock-busy"), []byte(strconv.Itoa(lockBusy)+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "installed"), []byte("ca-certificates\ngcc\n"), 0o644))
	env = append(os.Environ(), "FAKE="+dir, "PATH="+bin+":"+os.Getenv("PATH"), "DEFT_APT_LOCK_POLL=0.01")
	return dir, env
}

func runDeps(t *testing.T, env []string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "deps.sh")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// deps.sh used to fail at once when another process held the apt lock
// (CI died once that way) and hid what it installed.
func TestDepsWaitsForTheAptLock(t *testing.T) {
	dir, env := fakeSystem(t, 2)
	out, err := runDeps(t, env)
	require.NoError(t, err, out)
	assert.Equal(t, 2, strings.Count(out, "another process holds the package manager's lock; retrying"), out)
	assert.Contains(t, out, "deps.sh: installing libvulkan1 mesa-vulkan-drivers vulkan-validationlayers libc6-dev")
	assert.Contains(t, out, "Setting up libvulkan1 (9.9-test)", "apt-get's output is shown")
	assert.Contains(t, out, "deps.sh: installed:\n  libvulkan1 9.9-test\n")
	log, err := os.ReadFile(filepath.Join(dir, "apt.log"))
	require.NoError(t, err)
	calls := strings.Split(strings.TrimSpace(string(log)), "\n")
	require.Len(t, calls, 4, "three updates (two held), one install")
	for _, c := range calls {
		assert.True(t, strings.HasPrefix(c, "-o DPkg::Lock::Timeout=600 "), "apt-get %s", c)
	}

	// Everything present: silent, no apt-get.
	out, err = runDeps(t, env)
	require.NoError(t, err)
	assert.Empty(t, out)
}

func TestDepsGivesUpOnAHeldLock(t *testing.T) {
	_, env := fakeSystem(t, 9)
	out, err := runDeps(t, append(env, "DEFT_APT_LOCK_TIMEOUT=0"))
	require.Error(t, err)
	assert.Contains(t, out, "Could not get lock")
	assert.Contains(t, out, "deps.sh: error: apt-get update failed")
	assert.NotContains(t, out, "retrying")
}
