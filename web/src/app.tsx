import { useEffect, useState } from "preact/hooks";
import { api, ApiError, setUnauthorizedHandler } from "./api/client";
import { closeTeamStream, setTeamUnauthorized } from "./api/team";
import type { Me } from "./api/types";
import { navigate, useRoute } from "./router";
import { ErrorBox, Link, Loading } from "./ui/common";
import { ComparePage } from "./views/Compare";
import { DatasetPage } from "./views/Dataset";
import { DatasetsPage } from "./views/Datasets";
import { LeaderboardPage } from "./views/Leaderboard";
import { LoginPage } from "./views/Login";
import { NewStudyPage } from "./views/NewStudy";
import { NewRunPage } from "./views/NewRun";
import { NotificationsPage } from "./views/Notifications";
import { RunPage } from "./views/Run";
import { RunsPage } from "./views/Runs";
import { StudiesPage } from "./views/Studies";
import { StudyPage } from "./views/Study";
import { WorkersPage } from "./views/Workers";

type Auth = { state: "loading" } | { state: "in"; me: Me } | { state: "out" } | { state: "error"; error: unknown };

export function App() {
  const route = useRoute();
  const [auth, setAuth] = useState<Auth>({ state: "loading" });

  const check = () => {
    setAuth({ state: "loading" });
    api
      .me()
      .then((me) => setAuth({ state: "in", me }))
      .catch((e) => {
        if (e instanceof ApiError && e.status === 401) setAuth({ state: "out" });
        else setAuth({ state: "error", error: e });
      });
  };
  useEffect(() => {
    const out = () => {
      closeTeamStream();
      setAuth({ state: "out" });
    };
    setUnauthorizedHandler(out);
    setTeamUnauthorized(out);
    check();
  }, []);

  if (route.path === "/login-page" || auth.state === "out") {
    return <LoginPage signedIn={auth.state === "in"} />;
  }
  if (auth.state === "loading")
    return (
      <main class="page">
        <Loading what="mocolab" />
      </main>
    );
  if (auth.state === "error")
    return (
      <main class="page">
        <ErrorBox error={auth.error} retry={check} />
      </main>
    );

  const path = route.path;
  let page;
  let section = "";
  const runMatch = /^\/runs\/([^/]+)\/?$/.exec(path);
  const studyMatch = /^\/studies\/([^/]+)\/?$/.exec(path);
  const datasetMatch = /^\/datasets\/([^/]+)\/?$/.exec(path);
  if (path === "/" || path === "/runs") {
    page = <RunsPage />;
    section = "runs";
  } else if (path === "/new") {
    page = <NewRunPage query={route.query} />;
    section = "new";
  } else if (runMatch) {
    page = <RunPage key={runMatch[1]} id={decodeURIComponent(runMatch[1])} />;
    section = "runs";
  } else if (path === "/compare") {
    page = (
      <ComparePage
        ids={(route.query.get("ids") ?? "")
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)}
      />
    );
    section = "compare";
  } else if (path === "/studies" || path === "/studies/") {
    page = <StudiesPage />;
    section = "studies";
  } else if (path === "/studies/new") {
    page = <NewStudyPage query={route.query} />;
    section = "studies";
  } else if (studyMatch) {
    page = <StudyPage key={studyMatch[1]} id={decodeURIComponent(studyMatch[1])} />;
    section = "studies";
  } else if (path === "/datasets" || path === "/datasets/") {
    page = <DatasetsPage />;
    section = "datasets";
  } else if (datasetMatch) {
    page = <DatasetPage key={datasetMatch[1]} name={decodeURIComponent(datasetMatch[1])} />;
    section = "datasets";
  } else if (path === "/leaderboard") {
    page = <LeaderboardPage />;
    section = "leaderboard";
  } else if (path === "/notifications" || path === "/notifications/") {
    page = <NotificationsPage />;
    section = "notifications";
  } else if (path === "/workers") {
    page = <WorkersPage />;
    section = "workers";
  } else {
    page = (
      <main class="page">
        <h1>Not found</h1>
        <p>
          There is no page at <code>{path}</code>. <Link href="/">Back to the runs</Link>.
        </p>
      </main>
    );
  }
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/" class="brand">
          mocolab
        </Link>
        <nav aria-label="Main">
          <Link href="/" aria-current={section === "runs" ? "page" : undefined}>
            Runs
          </Link>
          <Link href="/new" aria-current={section === "new" ? "page" : undefined} data-testid="nav-new">
            New run
          </Link>
          <Link href="/compare" aria-current={section === "compare" ? "page" : undefined}>
            Compare
          </Link>
          <Link href="/studies" aria-current={section === "studies" ? "page" : undefined} data-testid="nav-studies">
            Studies
          </Link>
          <Link
            href="/leaderboard"
            aria-current={section === "leaderboard" ? "page" : undefined}
            data-testid="nav-leaderboard"
          >
            Leaderboard
          </Link>
          <Link href="/datasets" aria-current={section === "datasets" ? "page" : undefined} data-testid="nav-datasets">
            Datasets
          </Link>
          <Link href="/workers" aria-current={section === "workers" ? "page" : undefined}>
            Workers
          </Link>
          <Link
            href="/notifications"
            aria-current={section === "notifications" ? "page" : undefined}
            data-testid="nav-notifications"
            title="Team settings: where alerts and run ends are sent"
          >
            Notifications
          </Link>
        </nav>
        <span class="spacer" />
        <span class="muted small" data-testid="whoami">
          {auth.me.user.name}
          {auth.me.teams.length ? ` · ${auth.me.teams.map((t) => t.name).join(", ")}` : ""}
        </span>
        <form method="post" action="/logout" class="inline">
          <button type="submit" class="btn small ghost" onClick={() => closeTeamStream()}>
            Log out
          </button>
        </form>
      </header>
      <div id="main">{page}</div>
    </>
  );
}

export { navigate };
