package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (e *env) repairCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Repair repository metadata from the data itself",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "index",
		Short: "Rebuild lost or damaged index files from the packs' headers",
		Long: `Read the header of every pack that no readable index file names, and write
new index files for them; then remove index files that are damaged. Pack data
is never changed or deleted. Run it when prune refuses because a backup uses
data no index names, or when verify reports a damaged index file. It takes
the repository's prune lock. Exit status 3 means some packs could not be
read: verify --read-data names them.`,
		Example: "  amber repair index\n  amber repair index --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := e.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := r.RepairIndex(ctx)
			if err != nil {
				return err
			}
			if e.jsonOut {
				if err := e.printJSON(res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.stdout, "%d packs stored, %d re-indexed (%d blobs) in %d new index file(s); %d damaged index file(s) removed\n",
					res.PacksStored, res.PacksIndexed, res.Blobs, res.IndexWritten, len(res.IndexRemoved))
				for _, p := range res.Problems {
					fmt.Fprintf(e.stdout, "PROBLEM %s: %s\n", p.Object, p.Error)
				}
			}
			if len(res.Problems) > 0 {
				return &exitError{code: 3, err: fmt.Errorf("%d pack(s) could not be read, first: %s; run `amber verify --read-data`", len(res.Problems), res.Problems[0].Object)}
			}
			return nil
		},
	})
	return cmd
}
