package pull

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/imageroot"
)

// ImportFS copies the directory tree dir (owners, modes, xattrs, hard
// links, device nodes) into a hidden work directory in the image root and
// installs it as name. The copy stays on dir's file system (mount points
// inside it are not descended, as systemd-import-fs does).
func ImportFS(ctx context.Context, root *imageroot.Root, dir, name string, opts ImportOptions) (err error) {
	log := opts.logOr(root.Log)
	unlock, err := lockImport(ctx, root, name, opts.Force)
	if err != nil {
		return err
	}
	defer unlock()
	src, err := dirtree.NewSource(dir, dirtree.SourceOptions{Logger: log, OneFileSystem: true})
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	defer src.Close()
	work, err := root.WorkDir(name)
	if err != nil {
		return err
	}
	defer removeWorkOnError(root, log, &work, &err)
	if err := Unpack(ctx, work, src, log); err != nil {
		return fmt.Errorf("copying %s: %w", dir, err)
	}
	tree, err := imageroot.MangleOSTree(work)
	if err != nil {
		return fmt.Errorf("copying %s: %w", dir, err)
	}
	if err := root.Install(tree, name, opts.InstallOptions); err != nil {
		return err
	}
	log.Info("imported", "image", name, "from", dir, "path", root.Path(name))
	return nil
}
