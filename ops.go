package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// manCommand prints the man page, made from the command definitions by
// urfave/cli (ToManWithSection).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Hidden: true,
		Usage:  "print the man page treecast(1) in roff: treecast man > /usr/local/share/man/man1/treecast.1",
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			page, err := manPage(c.App)
			if err != nil {
				return failed("man: %v", err)
			}
			fmt.Fprint(c.App.Writer, page)
			return nil
		},
	}
}

// manPage renders app as treecast(1). urfave/cli writes Markdown and turns
// it into roff, so the texts written for --help are escaped on a copy
// first; each command's description, without the exit codes it repeats,
// goes in as its usage text, and the exit codes once, after the
// description.
func manPage(app *cli.App) (string, error) {
	page := *app
	codes := strings.TrimPrefix(exitHelp, "EXIT CODES:\n")
	page.Description = mdEscape(app.Description) + "\n\n# EXIT CODES\n\n" + strings.ReplaceAll("\n"+codes, "\n", "\n ") // a code block
	page.Flags = manFlags(app.Flags)
	page.Commands = nil
	for _, c := range app.Commands {
		mc := *c
		mc.Usage = mdEscape(c.Usage)
		mc.UsageText = strings.TrimSpace(strings.TrimSuffix(c.Description, exitHelp)) // a code block: kept as written
		mc.Flags = manFlags(c.Flags)
		page.Commands = append(page.Commands, &mc)
	}
	return page.ToManWithSection(1)
}

// manFlag shows a visible flag with its usage escaped for Markdown.
type manFlag struct {
	cli.DocGenerationFlag
	usage string
}

func (f manFlag) GetUsage() string { return f.usage }
func (f manFlag) IsVisible() bool  { return true }

func manFlags(flags []cli.Flag) []cli.Flag {
	var out []cli.Flag
	for _, f := range flags {
		df, ok := f.(cli.DocGenerationFlag)
		if vf, visible := f.(cli.VisibleFlag); !ok || !visible || !vf.IsVisible() {
			continue
		}
		out = append(out, manFlag{df, mdEscape(df.GetUsage())})
	}
	return out
}

// mdEscape keeps Markdown from reading _, *, <, > and [ ] in s as markup;
// `code` spans stay.
func mdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "_", `\_`, "*", `\*`, "<", `\<`, ">", `\>`, "[", `\[`, "]", `\]`).Replace(s)
}
