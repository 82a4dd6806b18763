package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"

	"strata/api/apitypes"
)

func sortStrings(s []string) { slices.Sort(s) }

// opError turns a failed operation into the error main prints.
func opError(op *apitypes.Operation) error {
	if op.Error == nil {
		return nil
	}
	return &apiError{HTTPStatus: apitypes.HTTPStatus(op.Error.Code), Code: op.Error.Code, Message: op.Error.Message}
}

// getOperation fetches an operation.
func (a *app) getOperation(ctx context.Context, id string) (apitypes.Operation, error) {
	var op apitypes.Operation
	err := a.c.do(ctx, http.MethodGet, "/operation/"+url.PathEscape(id), nil, nil, &op)
	return op, err
}

// wait polls the operation until it is done. The poll interval starts
// short (most operations finish at once) and backs off to a second. With
// a label and a terminal, a progress bar follows metadata.progress.
func (a *app) wait(ctx context.Context, op apitypes.Operation, label string) (apitypes.Operation, error) {
	var bar *progressbar.ProgressBar
	if label != "" && a.showProgress() && !op.Done {
		bar = progressbar.NewOptions(1000,
			progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
		defer bar.Close()
	}
	delay := 20 * time.Millisecond
	for !op.Done {
		if bar != nil {
			_ = bar.Set(int(op.Metadata.Progress * 1000))
			if op.Metadata.Phase != "" {
				bar.Describe(label + " (" + op.Metadata.Phase + ")")
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return op, fmt.Errorf("stopped waiting; operation %s goes on in the daemon (strata operation wait %s, or cancel)", op.ID, op.ID)
		case <-t.C:
		}
		delay = min(delay*2, time.Second)
		next, err := a.getOperation(context.WithoutCancel(ctx), op.ID)
		if err != nil {
			return op, err
		}
		op = next
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return op, nil
}

// finish waits for op (unless --async), then decodes its response into out
// and prints it with print. With --async it prints the operation instead.
func finish[T any](a *app, ctx context.Context, op apitypes.Operation, label string, print func(T) error) error {
	if a.async {
		return a.printOperation(op)
	}
	op, err := a.wait(ctx, op, label)
	if err != nil {
		return err
	}
	if err := opError(&op); err != nil {
		return err
	}
	var out T
	if len(op.Response) > 0 {
		if err := json.Unmarshal(op.Response, &out); err != nil {
			return fmt.Errorf("operation %s response: %w", op.ID, err)
		}
	}
	if print == nil {
		switch a.format {
		case "json":
			return a.printJSON(op)
		case "id":
			fmt.Fprintln(a.stdout, op.ID)
		}
		return nil
	}
	return print(out)
}

// mutate sends a mutation and finishes its operation.
func mutate[T any](a *app, ctx context.Context, method, path string, body any, label string, print func(T) error) error {
	op, err := a.send(ctx, method, path, nil, body)
	if err != nil {
		return err
	}
	return finish(a, ctx, op, label, print)
}

// send posts a mutation and returns its operation.
func (a *app) send(ctx context.Context, method, path string, query url.Values, body any) (apitypes.Operation, error) {
	var op apitypes.Operation
	err := a.c.do(ctx, method, path, query, body, &op)
	if err == nil && op.ID == "" {
		err = errors.New("the daemon did not return an operation")
	}
	return op, err
}

var operationColumns = []column[apitypes.Operation]{
	{"ID", func(o apitypes.Operation) string { return o.ID }},
	{"DESCRIPTION", func(o apitypes.Operation) string { return o.Description }},
	{"CREATED", func(o apitypes.Operation) string { return when(o.CreatedAt) }},
	{"BY", func(o apitypes.Operation) string { return o.CreatedBy }},
	{"DONE", func(o apitypes.Operation) string { return yesNo(o.Done) }},
	{"PROGRESS", func(o apitypes.Operation) string { return fmt.Sprintf("%.0f%%", o.Metadata.Progress*100) }},
	{"RESULT", func(o apitypes.Operation) string {
		switch {
		case o.Error != nil:
			return o.Error.Code + ": " + o.Error.Message
		case o.Done:
			return "ok"
		}
		return o.Metadata.Phase
	}},
}

func (a *app) printOperation(op apitypes.Operation) error {
	return printOne(a, op, operationColumns)
}

// listAll fetches every page of a list: q plus pageToken until the daemon
// returns no next token.
func listAll[R any, T any](a *app, ctx context.Context, path string, q url.Values, items func(*R) ([]T, string)) ([]T, error) {
	var all []T
	tok := ""
	for {
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		if tok != "" {
			qq.Set("pageToken", tok)
		}
		var r R
		if err := a.c.do(ctx, http.MethodGet, path, qq, nil, &r); err != nil {
			return nil, err
		}
		page, next := items(&r)
		all = append(all, page...)
		if next == "" || next == tok {
			return all, nil
		}
		tok = next
	}
}
