package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestSkopeoReadsOutputs has a real third-party reader (skopeo, built on
// containers/image, which refuses mixed Docker/OCI media types) read every
// output format and copy it to an OCI layout that go-containerregistry then
// validates.
func TestSkopeoReadsOutputs(t *testing.T) {
	requireRoot(t)
	skopeo := testenv.RequireTool(t, "skopeo")
	tree := testTree(t)
	img := twoLayerImage(t, tree)
	dir := t.TempDir()
	layoutDir := filepath.Join(dir, "img.oci")
	if err := WriteLayout(context.Background(), layoutDir, img, WithRefName("v1")); err != nil {
		t.Fatal(err)
	}
	var archive, docker bytes.Buffer
	if err := WriteArchive(context.Background(), &archive, img, WithRefName("v1")); err != nil {
		t.Fatal(err)
	}
	if err := WriteDockerArchive(context.Background(), &docker, img, "berth/test:v1"); err != nil {
		t.Fatal(err)
	}
	archivePath := filepath.Join(dir, "img.oci.tar")
	dockerPath := filepath.Join(dir, "img.docker.tar")
	if err := os.WriteFile(archivePath, archive.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dockerPath, docker.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, skopeo, append([]string{"--insecure-policy"}, args...)...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("skopeo %v: %v\n%s", args, err, stderr)
		}
		return out
	}
	wantManifest, _ := img.RawManifest()
	for _, src := range []string{"oci:" + layoutDir + ":v1", "oci-archive:" + archivePath + ":v1"} {
		if got := run("inspect", "--raw", src); !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(wantManifest)) {
			t.Errorf("%s: skopeo sees manifest\n%s\nwant\n%s", src, got, wantManifest)
		}
		var info struct{ Architecture, Os string }
		if err := json.Unmarshal(run("inspect", src), &info); err != nil || info.Architecture != "amd64" || info.Os != "linux" {
			t.Errorf("%s: skopeo inspect: %+v %v", src, info, err)
		}
	}
	// skopeo copies each format (checking every blob's digest, and for
	// docker-archive the diffIDs against the config) to a fresh layout.
	for i, src := range []string{"oci:" + layoutDir + ":v1", "oci-archive:" + archivePath + ":v1", "docker-archive:" + dockerPath} {
		out := filepath.Join(dir, "copy"+string(rune('a'+i)))
		run("copy", "--quiet", src, "oci:"+out+":copy")
		back := readLayout(t, out)
		validateImage(t, back)
		dst, err := applyTo(t, back)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		got := snapshotNormalised(t, dst, false)
		delete(got, "srv")
		delete(got, "srv/index.html")
		mustEqualTrees(t, snapshotNormalised(t, tree, true), got)
	}
}
