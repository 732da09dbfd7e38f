package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/imageroot"
)

func (a *app) cleanCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "clean",
		Short: "Remove what dead jobs left in the image root, and the download cache",
		Long: `Remove the hidden work trees and files that berth jobs killed outright
(kill -9, power loss) left in the image root, and drop the download cache
(--keep-download). Work of a job that is still running is never touched:
ownership is decided by the lock the job holds, not by age. Every job
that writes into the image root does the first part by itself; clean does
it on demand, as machinectl clean does for hidden images.`,
		Args: rangeArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := a.openRoot()
			if err != nil {
				return err
			}
			reaped, err := root.Reap(cmd.Context())
			if err != nil {
				return err
			}
			for _, n := range reaped {
				a.log.Info("removed the debris of a dead job", "path", filepath.Join(root.Dir, n))
			}
			cache := root.Path(imageroot.CacheDirName)
			if _, err := os.Lstat(cache); err == nil {
				if err := imageroot.RemoveTree(cache); err != nil {
					return fmt.Errorf("removing the download cache: %w", err)
				}
				a.log.Info("removed the download cache", "path", cache)
			}
			// berth before 0.2 kept its cache under a name an image could
			// take; whatever is there now is not an image.
			legacy := root.Path(".berth-cache")
			if st, err := os.Lstat(legacy); err == nil && st.IsDir() {
				if err := imageroot.RemoveTree(legacy); err != nil {
					return fmt.Errorf("removing the old download cache: %w", err)
				}
				a.log.Info("removed the old download cache", "path", legacy)
			}
			a.log.Info("clean", "removed", len(reaped), "root", root.Dir)
			return nil
		},
	}
}
