package oci

import (
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
)

// memRegistry serves go-containerregistry's in-memory registry on
// 127.0.0.1 and returns its host:port.
func memRegistry(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return l.Addr().String()
}

func pushAndPull(t *testing.T, ref string, img v1.Image) v1.Image {
	t.Helper()
	ctx := context.Background()
	if err := Push(ctx, ref, img, WithKeychain(authn.NewMultiKeychain())); err != nil {
		t.Fatal(err)
	}
	r, err := ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	back, err := remote.Image(r, RemoteOptions(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	sameDigest(t, img, back)
	return back
}

func TestPushMemoryRegistry(t *testing.T) {
	requireRoot(t)
	tree := testTree(t)
	img := twoLayerImage(t, tree)
	back := pushAndPull(t, memRegistry(t)+"/berth/test:v1", img)
	validateImage(t, back)
	dst, err := applyTo(t, back)
	if err != nil {
		t.Fatal(err)
	}
	got := snapshotNormalised(t, dst, false)
	delete(got, "srv")
	delete(got, "srv/index.html")
	mustEqualTrees(t, snapshotNormalised(t, tree, true), got)
}

func TestPushRealRegistry(t *testing.T) {
	requireRoot(t)
	tree := testTree(t)
	addr := testenv.DockerRegistry(t)
	for _, comp := range []LayerCompression{Zstd, Gzip} {
		t.Run(string(comp), func(t *testing.T) {
			img := newTestImage(t, layerFromDir(t, tree, comp))
			back := pushAndPull(t, addr+"/berth/tree:"+string(comp), img)
			validateImage(t, back)
			dst, err := applyTo(t, back)
			if err != nil {
				t.Fatal(err)
			}
			mustEqualTrees(t, snapshotNormalised(t, tree, true), snapshotNormalised(t, dst, false))
		})
	}
	// A multi-layer image with whiteouts, opaque directories and hard links
	// survives the registry round trip.
	l1 := newTestLayer(t, Zstd, dirE("d"), reg("d/a", "a1"), linkE("d/b", "d/a"), reg("d/c", "c"), dirE("o"), reg("o/old", "x"))
	l2 := newTestLayer(t, Gzip, reg("d/a", "a2"), reg("d/.wh.c", ""), reg("o/.wh..wh..opq", ""), reg("o/new", "y"))
	back := pushAndPull(t, addr+"/berth/layers:1", newTestImage(t, l1, l2))
	dst, err := applyTo(t, back)
	if err != nil {
		t.Fatal(err)
	}
	want := writeExpected(t, dirE("d"), reg("d/a", "a2"), reg("d/b", "a1"), dirE("o"), reg("o/new", "y"))
	mustEqualTrees(t, snapshotNormalised(t, want, true), snapshotNormalised(t, dst, false))

	if err := Push(context.Background(), addr+"/Bad Name", back); err == nil {
		t.Error("bad reference accepted")
	}
}

func TestLoopbackRef(t *testing.T) {
	for ref, want := range map[string]bool{
		"127.0.0.1:5000/a/b:c":  true,
		"localhost:5000/a":      true,
		"localhost/a":           true,
		"[::1]:5000/a":          true,
		"registry.example/a:b":  false,
		"docker.io/library/a":   false,
		"ubuntu":                false,
		"10.0.0.1:5000/private": false,
	} {
		if got := loopbackRef(ref); got != want {
			t.Errorf("loopbackRef(%q) = %v", ref, got)
		}
	}
}
