// /?recording=42&media=4201 plays that media file; the <audio> element loads it from
// this app's own route handler (/api/recordings/...), which adds the API key server-side.

function single(value) {
  return Array.isArray(value) ? value[0] : value;
}

function isId(value) {
  return typeof value === "string" && /^[0-9]{1,18}$/.test(value);
}

export default async function Page({ searchParams }) {
  const query = await searchParams;
  const recording = single(query.recording);
  const media = single(query.media);
  const ready = isId(recording) && isId(media);
  const src = ready ? `/api/recordings/${recording}/media/${media}/raw` : null;

  return (
    <main>
      <h1>Play a recording</h1>

      {ready ? (
        <figure style={{ margin: "1.5rem 0" }}>
          <figcaption id="player-caption">
            Recording {recording}, media file {media}
          </figcaption>
          <audio
            id="player"
            controls
            preload="metadata"
            src={src}
            aria-labelledby="player-caption"
            style={{ width: "100%", marginTop: "0.5rem" }}
          >
            Your browser cannot play this audio. <a href={src}>Open the file</a> instead.
          </audio>
        </figure>
      ) : (
        <p role="status">
          Choose a recording and a media file, e.g. <a href="/?recording=42&amp;media=4201">recording 42, media 4201</a>.
        </p>
      )}

      <form method="get" action="/" aria-label="Choose a recording">
        <p>
          <label htmlFor="recording">Recording id </label>
          <input id="recording" name="recording" inputMode="numeric" pattern="[0-9]+" required defaultValue={recording ?? ""} />
        </p>
        <p>
          <label htmlFor="media">Media file id </label>
          <input id="media" name="media" inputMode="numeric" pattern="[0-9]+" required defaultValue={media ?? ""} />
        </p>
        <button type="submit">Play</button>
      </form>
    </main>
  );
}
